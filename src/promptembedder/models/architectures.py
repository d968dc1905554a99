"""Architecture-only model references (`arch:mistral-7b`, ...): the real configuration, random weights.

They let anyone measure speed and memory in the paper's regime (a 0.5B P steering a 7B E) without downloading
15 GB: the model is built from its published config.json values, directly on the target device and in the target
dtype (a 7B model is never materialised on the CPU), with a small word-level tokenizer so that a text of n words is
exactly n tokens. The token ids are not the real tokenizer's, and the weights mean nothing: such models are accepted
by `bench train`, `bench encode` and the Python API, and refused by `train`, `evaluate` and `transfer`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedTokenizerFast

PREFIX = "arch:"
NOTICE = "random weights: for timing and memory only"
COMMON = {"hidden_act": "silu", "attention_dropout": 0.0, "initializer_range": 0.02}

#: Values of each model's public config.json on the Hugging Face Hub (checked against those files).
ARCHITECTURES: dict[str, dict] = {
    "mistral-7b": {  # mistralai/Mistral-7B-v0.1
        "model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
    },
    "qwen2.5-0.5b": {  # Qwen/Qwen2.5-0.5B
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "use_sliding_window": False, "max_window_layers": 24,
        "tie_word_embeddings": True,
    },
    "qwen2.5-1.5b": {  # Qwen/Qwen2.5-1.5B
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "use_sliding_window": False, "max_window_layers": 28,
        "tie_word_embeddings": True,
    },
    "qwen2.5-7b": {  # Qwen/Qwen2.5-7B
        "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "use_sliding_window": False, "max_window_layers": 28,
        "tie_word_embeddings": False,
    },
    "llama-3-8b": {  # meta-llama/Meta-Llama-3-8B
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    },
    # For tests: the same code path in milliseconds.
    "tiny-llama": {
        "model_type": "llama", "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
    },
    "tiny-qwen2": {
        "model_type": "qwen2", "vocab_size": 1024, "hidden_size": 48, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "use_sliding_window": False, "max_window_layers": 2,
        "tie_word_embeddings": True,
    },
}
#: Model types whose tokenizer prepends BOS (Qwen2's adds nothing).
ADDS_BOS = {"mistral", "llama"}
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
#: The word-level vocabulary after the specials: common English words (anything else is <unk>, still one token).
WORDS = """a about above across after again against all along also am an and animal another any are around as at away
back ball be beach because bed been before behind being below between bike black blue boat book both boy bread brown
building but by can car cat chair child children city clothes come could cutting day did do does dog down drinking
during each eating every face family field fire five floor food for four friends from front game girl give go going
good grass green group guitar had hair hand has hat have he her here him his holding horse house how i in inside into
is it its jumping just kitchen large left like little long looking made man many may me men more most mountain much
music my near new next night no not now of off old on one only or other our out outside over park people person
picture play playing playground red riding road rock running sand sat see shirt should side sitting small snow so
some someone stage standing still street sun table taking talking than that the their them then there these they
this those three through to together top toward tree two under up very walking wall was water way we wearing were
what when where which while white who why will with woman women wooden work world would yellow you young your""".split()  # noqa: SIM905


def is_architecture(reference: str | Path) -> bool:
    return str(reference).startswith(PREFIX)


def architecture_name(reference: str) -> str:
    name = reference[len(PREFIX):]
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture reference {reference!r}: choose from "
                         f"{', '.join(PREFIX + n for n in ARCHITECTURES)}")
    return name


def build_tokenizer(reference: str) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: lower-cased, punctuation dropped, one token per whitespace word; BOS as the model's."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    values = ARCHITECTURES[architecture_name(reference)]
    vocab = {token: i for i, token in enumerate((*SPECIALS, *WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), "")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bos = values["model_type"] in ADDS_BOS
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                           special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>" if bos else None, eos_token="<eos>",
                                   unk_token="<unk>", pad_token="<pad>", padding_side="right",
                                   model_max_length=values["max_position_embeddings"])


def build_config(reference: str):
    """The transformers config of an architecture reference, with the special-token ids of its tokenizer."""
    values = dict(ARCHITECTURES[architecture_name(reference)])
    config = AutoConfig.for_model(values.pop("model_type"), **COMMON, **values, pad_token_id=0,
                                  bos_token_id=1, eos_token_id=2)
    config.name_or_path = reference
    return config


def build_model(loader, reference: str, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None):
    """`loader.from_config` (AutoModel / AutoModelForCausalLM) with random weights, created on `device` in `dtype`."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    with torch.device(device):
        model = loader.from_config(build_config(reference), dtype=dtype or torch.float32)
    sys.stderr.write(f"\n*** {reference}: {NOTICE} ({sum(p.numel() for p in model.parameters()) / 1e6:,.0f}M "
                     f"parameters on {device}, {model.dtype}) ***\n\n")
    return model


def saved_references(reference: str | Path) -> list[str]:
    """The model references a saved PromptEmbedder or baseline folder was built from ([] for anything else)."""
    for name, keys in (("promptembedder_config.json", ("prompting_model", "embedding_model")),
                       ("embedder_config.json", ("embedding_model",))):
        path = Path(reference, name)
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                return []
            return [str(data[k]) for k in keys if data.get(k)]
    return []


def refuse(references: list[str | Path | None], command: str) -> None:
    """Stop `train`, `evaluate` and `transfer` from running on random weights (directly or inside a saved model)."""
    for reference in references:
        if reference is None:
            continue
        inner = [r for r in saved_references(reference) if is_architecture(r)]
        if is_architecture(reference) or inner:
            what = f"'{reference}'" + (f" (built from {', '.join(inner)})" if inner else "")
            raise ValueError(f"{command}: {what} is an architecture-only reference with {NOTICE}; its results would "
                             "mean nothing. Use it with `bench train` / `bench encode`, or pass a real model.")
