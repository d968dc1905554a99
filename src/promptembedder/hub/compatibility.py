"""Start-up checks that P and E can play their parts: P generates (a causal LM), and K soft tokens plus some
text fit in both models' contexts. Caught here, these fail in seconds with the cause, not at the first dev
evaluation after a whole training run."""

from __future__ import annotations

from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from .registry import load_pretrained


def check_prompting_model(reference: str) -> None:
    """P must be a causal LM: an encoder (BERT, MiniLM) cannot generate the soft tokens."""
    config = load_pretrained(AutoConfig, reference)
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ValueError(f"prompting_model '{reference}' is a {model_type} model, an encoder: P must be a causal LM "
                         "(a decoder such as gemma3-270m, Llama or Qwen); an encoder can serve as embedding_model (E)")


def position_limit(model_config) -> int | None:
    config = getattr(model_config, "get_text_config", lambda: model_config)()
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_context(num_soft_tokens: int, backbone, generator=None) -> None:
    """K soft tokens, E's special tokens and at least one text token must fit E's length limit (max_length, its
    tokenizer's and its position embeddings'); K tokens after BOS must fit P's context."""
    if num_soft_tokens == 0:
        return
    specials = len(backbone.tokenizer("", add_special_tokens=True)["input_ids"])
    limits = {"max_length": backbone.max_length, "E's position embeddings": position_limit(backbone.model.config)}
    name, limit = min(((n, v) for n, v in limits.items() if v), key=lambda item: item[1])
    if num_soft_tokens + specials + 1 > limit:
        raise ValueError(f"num_soft_tokens={num_soft_tokens} does not fit the embedding model's context: {name} is "
                         f"{limit} tokens, of which {specials} are special tokens, leaving no room for text. Lower "
                         f"num_soft_tokens below {max(limit - specials, 1)} or raise max_length")
    p_limit = generator.context_length if generator is not None else None
    if p_limit is not None and num_soft_tokens + 1 > p_limit:
        raise ValueError(f"num_soft_tokens={num_soft_tokens} does not fit the prompting model's context of {p_limit} "
                         f"tokens (the instruction comes first): lower num_soft_tokens below {p_limit}")
