"""Export a PromptEmbedder as a plain Hugging Face checkpoint of E plus a sentence-transformers configuration.

At inference a soft prompt depends only on the instruction, so each instruction's aligned prompt is a constant
(K, d_E) block of E's input embeddings. Export compiles each into K new tokens of E's vocabulary whose input
embeddings are exactly those vectors; `prompts` in config_sentence_transformers.json maps each task name to its
token string. The folder then runs wherever plain checkpoints run (sentence-transformers, TEI, vLLM), without P.

A prefix prompt's tokens go before the text, as sentence-transformers prepends any prompt. A suffix prompt's go
after the text, before a trailing special token, where training put them: sentence-transformers >= 6 renders
text inputs through a chat template when the Transformer module has the `message` modality and hands it the
prompt as a system message, so the folder's `processing_kwargs` carry a template (not the tokenizer's own chat
template, which stays for generation) that writes the user text first and the system prompt after it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from ..data.datasets import read_instructions_json
from ..hub.model_card import README, CompiledPrompt, exported_model_card
from ..hub.registry import load_pretrained
from ..models.backbone import is_decoder
from ..models.config import CONFIG_NAME
from ..models.prompt_embedder import PromptEmbedder
from . import folder as export_folder

#: Where the prompt sits in E's input: the positions export compiles into tokens (`both` and `deep` are not).
PROMPT_POSITIONS = ("prefix", "suffix")
#: The suffix prompt's chat template: E's leading special tokens, the text, the prompt, E's trailing special tokens.
SUFFIX_TEMPLATE = ("{lead}{{% for m in messages %}}{{% if m.role != 'system' %}}{{{{ m.content }}}}{{% endif %}}"
                   "{{% endfor %}}{{% for m in messages %}}{{% if m.role == 'system' %}}{{{{ m.content }}}}"
                   "{{% endif %}}{{% endfor %}}{trail}")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CUSTOM_POOLING_FILE = "prompt_pooling.py"
VERIFY_TEXTS = ("A man is playing a guitar.", "Two dogs run across a green field in the sun.", "Hi")
MIN_COSINE = 0.9999


@dataclass
class ExportedTokens:
    """The new tokens of one instruction: their strings (in order) and ids in E's extended vocabulary."""

    tokens: list[str]
    ids: list[int]

    @property
    def token_string(self) -> str:
        return "".join(self.tokens)


def read_instructions(path: str | Path) -> dict[str, str]:
    """`{name: instruction}` from a JSON file; names become `prompt_name`s, so they must be plain identifiers."""
    data = read_instructions_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"instructions file {path}: expected a non-empty JSON object {{name: instruction}}")
    for name, instruction in data.items():
        if not isinstance(instruction, str):
            raise ValueError(f"instructions file {path}: instruction for {name!r} must be a string, "
                             f"got {type(instruction).__name__}")
    return dict(data)


def task_instructions(tasks: list[str]) -> dict[str, str]:
    """The instructions our evaluation gives each named task (e.g. `sts-b`), for `--tasks`."""
    from ..evaluation import TASKS

    result = {}
    for task in tasks:
        spec = TASKS.get(task.lower())
        if spec is None:
            raise ValueError(f"unknown task {task!r} (known tasks: {', '.join(TASKS)}); use --instructions FILE "
                             "for other instructions")
        result[spec.name] = spec.instruction or ""
    return result


def default_prompts(model: PromptEmbedder, instructions: Mapping[str, str | None]) -> dict[str, None]:
    """sentence-transformers' `query` and `document` prompts (what its encode_query / encode_document use without a
    prompt_name), as our encode_query / encode_document without one: the default instruction's prompt, for
    documents only when the model prompts them (`prompt_on='both'`). Names the user gave are left alone."""
    sides = ["query"] + (["document"] if model.uses_prompt("document") else [])
    return {side: None for side in sides if side not in instructions}


def compile_prompts(model: PromptEmbedder, instructions: Mapping[str, str | None]) -> dict[str, torch.Tensor]:
    """Each instruction's aligned soft prompt (K, d_E) in float32: exactly what `PromptEmbedder.embed` feeds E."""
    if model.generator is None:
        raise ValueError("this model has no soft prompt (num_soft_tokens=0): the bare backbone needs no export")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return {name: model.soft_prompt(text).detach().float().cpu().clone() for name, text in instructions.items()}
    finally:
        model.train(was_training)


def _untie_output_embeddings(model: nn.Module) -> None:
    """Give a decoder's LM head its own copy of the embedding matrix, so new input rows never become logits."""
    output = model.get_output_embeddings()
    if output is None or output.weight is not model.get_input_embeddings().weight:
        return
    output.weight = nn.Parameter(output.weight.detach().clone())
    for config in (model.config, getattr(model.config, "text_config", None)):
        if config is not None and hasattr(config, "tie_word_embeddings"):
            config.tie_word_embeddings = False


def _input_scale(embedding: nn.Module) -> float:
    """What E's embedding layer multiplies rows by (Gemma: sqrt(d)); stored rows are prompt / scale."""
    scale = getattr(embedding, "embed_scale", None)
    return 1.0 if scale is None else float(scale)


def add_prompt_tokens(model: nn.Module, tokenizer, prompts: Mapping[str, torch.Tensor]) -> dict[str, ExportedTokens]:
    """Add K tokens per prompt to E's vocabulary with input embeddings such that E's embedding layer returns the
    prompt exactly; decoders get an untied LM head whose new rows are zero and suppressed in generation."""
    vocab = tokenizer.get_vocab()
    exported = {}
    for name, prompt in prompts.items():
        tokens = [f"<pe:{name}:{i}>" for i in range(prompt.shape[0])]
        clash = [t for t in tokens if t in vocab]
        if clash:
            raise ValueError(f"E's tokenizer already has token {clash[0]!r}: was this model exported before?")
        tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in tokens])
        exported[name] = ExportedTokens(tokens, tokenizer.convert_tokens_to_ids(tokens))
    decoder = model.get_output_embeddings() is not None
    if decoder:
        _untie_output_embeddings(model)
    old_size = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    embedding = model.get_input_embeddings()
    scale = _input_scale(embedding)
    with torch.no_grad():
        for name, prompt in prompts.items():
            embedding.weight[exported[name].ids] = (prompt / scale).to(embedding.weight.dtype)
            got = embedding(torch.tensor(exported[name].ids, device=embedding.weight.device)).float().cpu()
            if not torch.allclose(got, prompt, rtol=1e-4, atol=1e-5 * float(prompt.abs().max())):
                raise RuntimeError(f"E's embedding layer ({type(embedding).__name__}) transforms its rows in a way "
                                   "export does not invert; cannot compile the prompt into tokens")
        if decoder:
            output = model.get_output_embeddings()
            if output.weight is embedding.weight:
                raise RuntimeError("E's LM head is still tied to its input embeddings after untying")
            output.weight[old_size:] = 0
            new_ids = list(range(old_size, len(tokenizer)))
            model.generation_config.suppress_tokens = sorted(set(model.generation_config.suppress_tokens or [])
                                                             | set(new_ids))
    return exported


def suffix_chat_template(tokenizer) -> str:
    """The chat template that puts a system message (the prompt) after the user text, between the special tokens
    E's tokenizer adds around a text, so the rendered ids equal `tokenizer(text + prompt)`'s."""
    ids = tokenizer("hello", add_special_tokens=True)["input_ids"]
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    lead = next((i for i in range(len(ids)) if ids[i : i + len(plain)] == plain), None)
    if lead is None:
        raise ValueError("E's tokenizer changes a text's own tokens when it adds special tokens; a suffix prompt "
                         "cannot be expressed as a template: use `promptembedder serve` on the saved model")
    tokens = tokenizer.convert_ids_to_tokens(ids)
    return SUFFIX_TEMPLATE.format(lead="".join(tokens[:lead]), trail="".join(tokens[lead + len(plain):]))


def _transformer_module(out: Path, max_length: int, position: str, tokenizer):
    """E's sentence-transformers Transformer. Text only for a prefix (a decoder's own chat template must not wrap
    the text); for a suffix, the `message` modality with the suffix template (see the module docstring)."""
    from sentence_transformers.sentence_transformer.modules import Transformer

    text = {"method": "forward", "method_output_name": "last_hidden_state"}
    if position == "prefix":
        return Transformer(str(out), max_seq_length=max_length, modality_config={"text": text},
                           module_output_name="token_embeddings")
    return Transformer(str(out), max_seq_length=max_length,
                       modality_config={"text": text, "message": {**text, "format": "flat"}},
                       module_output_name="token_embeddings",
                       processing_kwargs={"chat_template": {"chat_template": suffix_chat_template(tokenizer)}})


def _sentence_transformer(out: Path, model: PromptEmbedder, exported: Mapping[str, ExportedTokens], tokenizer):
    """sentence-transformers modules equal to our pooling; mean pooling needs PromptPooling (see its module)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    from .prompt_pooling import PromptPooling

    backbone = model.backbone
    transformer = _transformer_module(out, backbone.max_length, backbone.prompt_position, tokenizer)
    dim = backbone.hidden_size
    if model.config.pooling == "mean":
        pooling = PromptPooling(dim, prompt_offset=int(backbone.prefix_special))
    else:
        pooling = Pooling(dim, pooling_mode={"last": "lasttoken", "cls": "cls"}[model.config.pooling])
    modules = [transformer, pooling] + ([Normalize()] if model.normalize else [])
    prompts = {name: tokens.token_string for name, tokens in exported.items()}
    return SentenceTransformer(modules=modules, prompts=prompts, similarity_fn_name="cosine", device="cpu")


def _ship_custom_pooling(out: Path) -> None:
    """Make the folder self-contained: the pooling module's source travels with it, referenced by file name."""
    from . import prompt_pooling

    shutil.copyfile(prompt_pooling.__file__, out / CUSTOM_POOLING_FILE)
    modules_path = out / "modules.json"
    modules = json.loads(modules_path.read_text())
    for module in modules:
        if module["type"].endswith(".PromptPooling"):
            module["type"] = f"{Path(CUSTOM_POOLING_FILE).stem}.PromptPooling"
    modules_path.write_text(json.dumps(modules, indent=2) + "\n")


def with_prompt(text: str, token_string: str, position: str) -> str:
    """The input string a plain engine (transformers, TEI, vLLM, infinity) embeds for `text` under a task."""
    return text + token_string if position == "suffix" else token_string + text


def plain_embeddings(out: str | Path, inputs: list[str], pooling: str) -> np.ndarray:
    """Normalised embeddings of ready-made input strings by plain transformers (AutoModel, E's tokenizer, no
    sentence-transformers): what an engine serving the folder computes."""
    from ..models.pooling import pool

    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.padding_side = "right"
    e_model = AutoModel.from_pretrained(out, dtype=torch.float32).eval()
    batch = tokenizer(inputs, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = e_model(**batch).last_hidden_state
    return torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], pooling), dim=-1).numpy()


def _check(name: str, how: str, ours: np.ndarray, theirs: np.ndarray) -> float:
    cosine = float(np.min(np.sum(ours * theirs, axis=1)))
    if cosine < MIN_COSINE:
        raise RuntimeError(f"exported prompt {name!r} through {how} gives embeddings with cosine {cosine:.6f} to "
                           f"PromptEmbedder.encode (need >= {MIN_COSINE}): the export is wrong, please report it")
    return cosine


def verify_export(out: str | Path, model: PromptEmbedder, names: list[str], texts=VERIFY_TEXTS) -> dict[str, float]:
    """Load the folder with sentence-transformers and compare to `PromptEmbedder.encode`; min cosine per name.
    Last-token and CLS pooling are checked through plain transformers on `text` with the token string too."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu", trust_remote_code=(Path(out) / CUSTOM_POOLING_FILE).exists(),
                             local_files_only=True)
    record = json.loads((Path(out) / "promptembedder_export.json").read_text())
    position, pooling, texts = record["prompt_position"], model.backbone.pooling, list(texts)
    plain = None
    if pooling != "mean":  # a plain mean would average the prompt tokens in (see the folder's README)
        inputs = [with_prompt(text, record["tokens"][name], position) for name in names for text in texts]
        plain = plain_embeddings(out, inputs, pooling).reshape(len(names), len(texts), -1)
    result = {}
    for i, name in enumerate(names):
        ours = model.encode(texts, instruction=record["instructions"][name], normalize=True)
        theirs = st.encode(texts, prompt_name=name, normalize_embeddings=True)
        result[name] = _check(name, "sentence-transformers", ours, theirs)
        if plain is not None:
            result[name] = min(result[name], _check(name, "transformers", ours, plain[i]))
    return result


def export(model: str | Path | PromptEmbedder, out: str | Path, instructions: Mapping[str, str],
           overwrite: bool = False, verify: bool = True) -> Path:
    """Write E with each instruction compiled to tokens into `out`, loadable by sentence-transformers.

    `model` is a saved PromptEmbedder folder (or the model itself). A non-empty `out` is refused unless
    `overwrite` and it is an earlier export (see export_folder: only that export's files are replaced). The folder
    is written beside `out` and swapped in when complete; with `verify`, after it was reloaded and checked against
    `PromptEmbedder.encode`.
    """
    if not instructions:
        raise ValueError("nothing to export: give instructions (--instructions FILE) or tasks (--tasks sts-b,...)")
    for name in instructions:
        if not NAME_PATTERN.match(name):
            raise ValueError(f"instruction name {name!r}: use letters, digits, '_', '-' or '.' (it becomes a "
                             "prompt_name and part of token strings)")
    out = Path(out)
    model_dir = None if isinstance(model, PromptEmbedder) else Path(model)
    export_folder.check_target(out, model_dir, overwrite)
    if model_dir is not None:
        if not (model_dir / CONFIG_NAME).exists():
            raise FileNotFoundError(f"{model_dir / CONFIG_NAME} not found: export needs a saved PromptEmbedder "
                                    "(baselines and bare backbones have no instruction prompts to compile)")
        model = PromptEmbedder.from_pretrained(model_dir, device="cpu")
    prompt_position = model.backbone.prompt_position  # `auto` resolved as training resolved it
    if prompt_position not in PROMPT_POSITIONS:
        raise ValueError(f"this model's soft prompt is at position {prompt_position!r}; export compiles "
                         f"{' or '.join(PROMPT_POSITIONS)} prompts only. Use `promptembedder serve` on the saved "
                         "model instead")
    if prompt_position == "suffix" and model.backbone.pooling == "mean":
        raise ValueError("this model mean-pools behind a suffix prompt; sentence-transformers cannot leave a prompt "
                         "that follows the text out of a mean (it measures prompts from the start). Use "
                         "`promptembedder serve` on the saved model instead")
    instructions = {**instructions, **default_prompts(model, instructions)}
    prompts = compile_prompts(model, instructions)
    reference = model.config.embedding_model
    decoder = is_decoder(model.backbone.model)
    e_model = load_pretrained(AutoModelForCausalLM if decoder else AutoModel, reference, dtype=torch.float32)
    tokenizer = load_pretrained(AutoTokenizer, reference)
    tokenizer.padding_side = "right"
    exported = add_prompt_tokens(e_model, tokenizer, prompts)
    with export_folder.staged(out, model_dir, overwrite) as staging:
        _write(staging, out.name, model, model_dir, e_model, tokenizer, exported, instructions, verify)
    return out


def _write(out: Path, folder_name: str, model: PromptEmbedder, model_dir: Path | None, e_model, tokenizer,
           exported: Mapping[str, ExportedTokens], instructions: Mapping[str, str], verify: bool) -> None:
    """Every file of the export, into `out` (the staging folder; `folder_name` is its final name)."""
    prompt_position = model.backbone.prompt_position
    e_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    st = _sentence_transformer(out, model, exported, tokenizer)
    st.save(str(out))
    e_model.save_pretrained(out)  # sentence-transformers saved E's base model; keep the full model (LM head)
    custom = model.config.pooling == "mean"
    if custom:
        _ship_custom_pooling(out)
    record = {"prompt_position": prompt_position, "num_soft_tokens": model.config.num_soft_tokens,
              "instructions": dict(instructions), "tokens": {n: t.token_string for n, t in exported.items()},
              "source": model.config.to_dict()}
    (out / "promptembedder_export.json").write_text(json.dumps(record, indent=2) + "\n")
    cards = [CompiledPrompt(name, "(the default instruction)" if text is None else text, exported[name].token_string,
                            model.decode_prompt(text)) for name, text in instructions.items()]
    (out / README).write_text(exported_model_card(model.config, model_dir, cards, trust_remote_code=custom,
                                                  folder=folder_name, position=prompt_position,
                                                  pooling=model.backbone.pooling))
    if verify:
        verify_export(out, model, list(instructions))
