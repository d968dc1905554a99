"""PromptEmbedder: P generates a soft prompt from an instruction, W aligns it, frozen E embeds behind it."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..hub.compatibility import check_context, check_prompting_model
from ..hub.model_card import write_saved_model_card
from ..hub.registry import load_pretrained
from ..hub.serialization import check_tensors, read_safetensors, verify_manifest, write_manifest
from .alignment import Alignment
from .backbone import EmbeddingBackbone
from .building import add_lora, default_device, frozen_dtype, load_lora
from .config import CONFIG_NAME, PromptEmbedderConfig
from .deep_prompt import DeepPrompt
from .generator import PromptGenerator, SoftPrompt
from .prompt_head import PromptHead, unit_prompts
from .trainable import TrainableEmbedder

ALIGNMENT_FILE = "alignment.safetensors"
PROMPTING_FILE = "prompting_model.safetensors"
LAYER_OFFSETS = "layer_offsets"  # a deep prompt's per-layer maps, beside W in ALIGNMENT_FILE
ADAPTER_DIR = "prompting_adapter"


class PromptEmbedder(TrainableEmbedder):
    """Text embeddings from a frozen Embedding LLM steered by soft prompts from a Prompting LLM.

    Build from references, e.g. `PromptEmbedder(prompting_model="gemma3-270m", embedding_model="minilm-l6")`,
    or reload with `PromptEmbedder.from_pretrained(dir)`. `num_soft_tokens=0` is the bare backbone.
    """

    def __init__(self, config: PromptEmbedderConfig | None = None, device: str | torch.device | None = None,
                 _init_alignment: bool = True, **overrides):
        super().__init__()
        config = config or PromptEmbedderConfig()
        if overrides:
            config = PromptEmbedderConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        device = torch.device(device) if device is not None else default_device()
        self.backbone = EmbeddingBackbone.load(config.embedding_model, device, frozen_dtype(device), config.pooling,
                                               config.max_length, prompt_position=config.prompt_position)
        self.config.pooling = self.backbone.pooling
        self.config.prompt_position = self.backbone.prompt_position
        self.normalize = config.normalize
        self.embedding_dim = self.backbone.hidden_size
        self.generator: PromptGenerator | None = None
        self.alignment: Alignment | None = None
        self._prompt_cache: dict[str, torch.Tensor] = {}
        if config.num_soft_tokens == 0:
            self.eval()
            return
        check_prompting_model(config.prompting_model)
        p_model = load_pretrained(AutoModelForCausalLM, config.prompting_model, device,
                                  dtype=torch.float32).to(device)
        p_tokenizer = load_pretrained(AutoTokenizer, config.prompting_model)
        self.generator = PromptGenerator(p_model, p_tokenizer, config.num_soft_tokens, config.tau, config.hard,
                                         config.gumbel_noise)
        check_context(config.num_soft_tokens, self.backbone, self.generator)
        self._set_prompting_trainable()
        deep = self.backbone.kv_layout if self.backbone.prompt_position == "deep" else None
        self.alignment = Alignment(self.generator.hidden_size, self.backbone.hidden_size, layout=deep).to(device)
        if _init_alignment:
            init = self.alignment.init_from_vocabularies(
                p_tokenizer, self.generator.embedding_matrix, self.backbone.tokenizer,
                self.backbone.model.get_input_embeddings(), config.alignment_init,
            )
            if not config.train_alignment and init == "random":
                raise ValueError(f"train_alignment=False keeps W at its start, but {config.prompting_model} and "
                                 f"{config.embedding_model} share too few tokens for a least-squares W (it would "
                                 "stay random): train W, or pick a P whose vocabulary overlaps E's")
        self.alignment.requires_grad_(config.train_alignment)
        self.eval()  # as transformers' from_pretrained: ready to encode; the trainer switches to train mode

    # --- construction -------------------------------------------------------------------------------
    def _set_prompting_trainable(self) -> None:
        """Full fine-tuning (token embeddings optional), a peft LoRA adapter, or nothing trainable."""
        model = self.generator.model
        mode = self.config.prompting_trainable
        if mode == "lora":
            self.generator.model = add_lora(model, self.config.lora_rank, self.config.lora_alpha)
            return
        model.requires_grad_(mode == "full")
        if mode == "full" and not self.config.train_prompting_embeddings:
            model.get_input_embeddings().requires_grad_(False)
            output = model.get_output_embeddings()
            if output is not None:
                output.requires_grad_(False)

    @property
    def document_side_trainable(self) -> bool:
        return self.config.prompt_on == "both"

    def freeze_prompting_model(self) -> None:
        """Freeze P (transfer to a new backbone trains W alone); the saved P weights stay as they are."""
        if self.generator is not None:
            self.generator.model.requires_grad_(False)
        self._prompt_cache.clear()

    def train(self, mode: bool = True) -> PromptEmbedder:
        """Like nn.Module.train, but E stays in eval mode (frozen, no dropout); training mode empties the prompt
        cache, since P and W may change, while eval mode keeps it across encode calls."""
        super().train(mode)
        self.backbone.model.eval()
        if mode:
            self._prompt_cache.clear()
        return self

    # --- the method ------------------------------------------------------------------------------------
    def soft_prompt(self, instruction: str | None = None) -> torch.Tensor | DeepPrompt | None:
        """The aligned soft prompt (K, d_E), with its per-layer offsets for a deep prompt, for an instruction;
        cached per instruction at inference."""
        if self.generator is None:
            return None
        instruction = self.config.instruction_text(instruction)
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and instruction in self._prompt_cache:
            return self._prompt_cache[instruction]
        prompt = self.alignment(self.generator(instruction).embeddings)
        if cacheable:
            self._prompt_cache[instruction] = prompt
        return prompt

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        """Differentiable embeddings (B, d). Documents get no prompt when the model is `prompt_on='query'`."""
        prompt = self.soft_prompt(instruction) if self.uses_prompt(prompt_type) else None
        return self.backbone(texts, prompt, normalize=normalize)

    def embed_instructions(self, texts: list[str], instructions: list[str | None], prompt_type: str = "query",
                           normalize: bool = True) -> torch.Tensor:
        """(M, B, d): the texts under each of M instructions. With a suffix prompt on a causal E, E reads each text
        once and only the M prompts run over its cache (backbone.embed_prompts); a text without a prompt is read once
        and is the same under every instruction."""
        if self.generator is None or not self.uses_prompt(prompt_type):
            return self.embed(texts, None, prompt_type, normalize).expand(len(instructions), -1, -1)
        return self.backbone.embed_prompts(texts, [self.soft_prompt(i) for i in instructions], normalize)

    # --- the training interface (see trainable.py) ------------------------------------------------------
    def param_groups(self, alignment_learning_rate: float) -> list[dict]:
        """W learns faster than P: it is a small fresh matrix, P a pretrained LM."""
        align = [p for p in self.alignment.parameters() if p.requires_grad]
        align_ids = {id(p) for p in align}
        other = [p for p in self.parameters() if p.requires_grad and id(p) not in align_ids]
        return [{"params": align, "lr": alignment_learning_rate}] + ([{"params": other}] if other else [])

    def set_tau(self, tau: float) -> None:
        if self.generator is not None:
            self.generator.tau = tau

    def training_module(self) -> nn.Module:
        """P and W (instruction -> prompt): frozen E is never broadcast or synchronised."""
        return PromptHead(self.generator, self.alignment, self.config.instruction_text)

    def sharded_modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "alignment": self.alignment}

    def training_context(self, module: nn.Module, instruction: str | None, contrast: tuple[str | None, ...] = (),
                         documents: tuple[str | None, ...] = ()
                         ) -> tuple[torch.Tensor | DeepPrompt, torch.Tensor | DeepPrompt | None, torch.Tensor | None]:
        """The batch's soft prompt, its documents' (when they take a prompt of their own) and the similarity to the
        contrast instructions' prompts, made in one forward of `module` (the wrapped PromptHead): data parallelism
        allows one per backward."""
        return module(instruction, contrast, documents if self.uses_prompt("document") else ())

    def embed_documents(self, documents: list[str], context: torch.Tensor | DeepPrompt | None,
                        document_instruction: str | None) -> torch.Tensor:
        return self.backbone(documents, context)

    def embed_in_context(self, module: nn.Module, texts: list[str], prompt_type: str, context: torch.Tensor | None,
                         instruction: str | None) -> torch.Tensor:
        return self.backbone(texts, context if self.uses_prompt(prompt_type) else None)

    @torch.no_grad()
    def _read_prompts(self, instructions: list[str | None]) -> dict[str, SoftPrompt]:
        """P's prompt for each distinct instruction, in eval mode (no Gumbel noise), P's mode restored after."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            texts = dict.fromkeys(map(self.config.instruction_text, instructions))
            return {text: self.generator(text) for text in texts}
        finally:
            self.generator.train(was_training)

    def decode_prompt(self, instruction: str | None = None) -> str:
        """The text the soft prompt is closest to (argmax of each step's distribution), to read what it says."""
        if self.generator is None:
            return ""
        (prompt,) = self._read_prompts([instruction]).values()
        return self.generator.decode(prompt.token_ids)

    @torch.no_grad()
    def instruction_report(self, instructions: list[str | None]) -> dict:
        """The prompt P writes for each instruction, decoded, and how alike P's soft tokens are across them (cosine).
        Near 1 everywhere, P has collapsed into one static prompt and the instruction no longer steers E."""
        if self.generator is None:
            return {}
        prompts = self._read_prompts(instructions)
        report: dict = {"prompts": {text: self.generator.decode(p.token_ids) for text, p in prompts.items()}}
        if len(prompts) > 1:
            pairs = self._cosines(prompts)[torch.triu_indices(len(prompts), len(prompts), 1).unbind()]
            report["prompt_cosine"] = {name: float(getattr(pairs, name)()) for name in ("min", "mean", "max")}
        return report

    @torch.no_grad()
    def prompt_similarity(self, instructions: list[str | None]) -> torch.Tensor:
        """(n, n) cosine of P's soft prompts between the instructions (each flattened): two instructions P cannot
        tell apart (near 1) give E nearly the same prompt, so a text can hardly embed differently under them."""
        if self.generator is None:
            raise ValueError("a bare backbone (num_soft_tokens=0) writes no prompt to compare")
        prompts = self._read_prompts(instructions)
        keys = list(prompts)
        index = [keys.index(self.config.instruction_text(text)) for text in instructions]
        return self._cosines(prompts)[index][:, index]

    @staticmethod
    def _cosines(prompts: dict) -> torch.Tensor:
        flat = unit_prompts([p.embeddings for p in prompts.values()])
        return flat @ flat.T

    @classmethod
    def for_new_backbone(cls, directory: str | Path, embedding_model: str, pooling: str | None = None,
                         prompt_position: str = "auto", device: str | torch.device | None = None) -> PromptEmbedder:
        """Transfer: the trained P of a saved model, frozen, with a fresh W (lstsq-initialised) for a new E.
        Pooling and the prompt's position belong to E, so both are chosen afresh for the new E (`auto` by default:
        a decoder pooled at its last token reads a suffix, an encoder a prefix). A P trained through LoRA has its
        adapter merged into its weights, so the transferred model saves and reloads as a fully trained P."""
        directory = Path(directory)
        source = PromptEmbedderConfig.load(directory)
        if source.num_soft_tokens == 0:
            raise ValueError(f"{directory} has no prompting model to transfer (num_soft_tokens=0)")
        trainable = "full" if source.prompting_trainable == "lora" else source.prompting_trainable
        config = PromptEmbedderConfig.from_dict({**source.to_dict(), "embedding_model": embedding_model,
                                                 "pooling": pooling, "prompt_position": prompt_position,
                                                 "prompting_trainable": trainable, "train_alignment": True})
        model = cls(config, device=device)
        if source.prompting_trainable == "lora":
            model.generator.model = load_lora(model.generator.model, directory / ADAPTER_DIR).merge_and_unload()
        elif source.prompting_trainable == "full":
            model._load_prompting_state(directory)
        model.freeze_prompting_model()
        return model

    def _load_prompting_state(self, directory: Path) -> None:
        state, _ = read_safetensors(directory / PROMPTING_FILE, str(self.backbone.device))
        own = self.generator.model.state_dict()
        missing = set(state) - set(own)
        if missing:
            raise ValueError(f"{directory / PROMPTING_FILE}: weights not in the prompting model: {sorted(missing)[:5]}")
        check_tensors(directory / PROMPTING_FILE, state, {name: own[name].shape for name in state})
        self.generator.model.load_state_dict(state, strict=False)
        self._prompt_cache.clear()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    # --- persistence -----------------------------------------------------------------------------------
    def _prompting_state(self, state_dict: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """P's trained weights: every parameter in 'full' mode except frozen token embeddings (kept by reference).

        Tied weights (Gemma's lm_head is its embedding matrix) are stored once; loading re-ties them.
        """
        model = self.generator.model
        seen = set() if self.config.train_prompting_embeddings else {id(model.get_input_embeddings().weight)}
        state = {}
        for name, value in model.state_dict(keep_vars=True).items():
            if isinstance(value, torch.nn.Parameter) and id(value) not in seen:
                seen.add(id(value))
                value = state_dict[f"generator.model.{name}"] if state_dict is not None else value
                state[name] = value.detach().contiguous().cpu()
        return state

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Config JSON + safetensors of W and of P's trained weights (or its LoRA adapter); E by reference.

        `state_dict` (this model's weights by parameter name, as transformers' argument of that name) is saved
        instead of the live weights: the trainer passes the whole weights gathered from FSDP shards.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory)
        write_saved_model_card(self.config, directory)
        if self.generator is not None:
            self._save_weights(directory, state_dict)
        write_manifest(directory, self.config.to_dict(), self._references())  # last: the save is complete

    def _references(self) -> dict[str, tuple[str, object]]:
        """The models this one holds by reference, with their configs (for the manifest's hashes)."""
        references = {"embedding_model": (self.config.embedding_model, self.backbone.model.config)}
        if self.generator is not None:
            references["prompting_model"] = (self.config.prompting_model, self.generator.model.config)
        return references

    def _save_weights(self, directory: Path, state_dict: dict[str, torch.Tensor] | None) -> None:
        names = {"weight": "alignment.linear.weight"}
        if self.config.prompt_position == "deep":
            names[LAYER_OFFSETS] = "alignment.layer_offsets.weight"
        source = state_dict if state_dict is not None else self.state_dict()
        tensors = {key: source[name].detach().contiguous().cpu() for key, name in names.items()}
        save_file(tensors, directory / ALIGNMENT_FILE, metadata={"init": self.alignment.init_method})
        if self.config.prompting_trainable == "lora":
            prefix = "generator.model."
            adapter = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)} if state_dict \
                else None
            self.generator.model.save_pretrained(directory / ADAPTER_DIR, state_dict=adapter)
        elif self.config.prompting_trainable == "full":
            save_file(self._prompting_state(state_dict), directory / PROMPTING_FILE)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device | None = None, strict: bool = True,
                        **overrides) -> PromptEmbedder:
        """Reload a saved PromptEmbedder; P and E are rebuilt from their references, then trained weights applied.

        The manifest's hashes must match the saved config and the rebuilt P and E; `strict=False` only warns."""
        directory = Path(directory)
        config = PromptEmbedderConfig.load(directory)
        if overrides:
            config = PromptEmbedderConfig.from_dict({**config.to_dict(), **overrides})
        lora = config.prompting_trainable == "lora"
        base = PromptEmbedderConfig.from_dict({**config.to_dict(), "prompting_trainable": "frozen"}) if lora \
            else config
        model = cls(base, device=device, _init_alignment=False)
        verify_manifest(directory, CONFIG_NAME, model._references(), strict)
        if model.generator is None:
            return model
        alignment = read_safetensors(directory / ALIGNMENT_FILE)[0]
        check_tensors(directory / ALIGNMENT_FILE, alignment, {"weight": model.alignment.linear.weight.shape})
        model.alignment.linear.weight.data.copy_(alignment["weight"])
        if model.alignment.layer_offsets is not None:
            if LAYER_OFFSETS not in alignment:
                raise ValueError(f"{directory / ALIGNMENT_FILE} has no '{LAYER_OFFSETS}' for its deep prompt: the save "
                                 "is incomplete; save the model again")
            check_tensors(directory / ALIGNMENT_FILE, alignment,
                          {LAYER_OFFSETS: model.alignment.layer_offsets.weight.shape})
            model.alignment.layer_offsets.weight.data.copy_(alignment[LAYER_OFFSETS])
        model.alignment.init_method = "loaded"
        if lora:
            model.config = config
            model.generator.model = load_lora(model.generator.model, directory / ADAPTER_DIR, trainable=True)
        elif config.prompting_trainable == "full":
            model._load_prompting_state(directory)
        model.eval()
        return model
