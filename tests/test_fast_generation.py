"""P's generation with its frozen token embeddings cast once under autocast: same prompts, same gradients, less
memory saved for backward."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from promptembedder.hub.registry import load_pretrained
from promptembedder.models.generator import PromptGenerator


def _generator(reference: str) -> PromptGenerator:
    torch.manual_seed(0)
    model = load_pretrained(AutoModelForCausalLM, reference, "cpu", dtype=torch.float32)
    model.get_input_embeddings().requires_grad_(False)
    return PromptGenerator(model, load_pretrained(AutoTokenizer, reference), num_soft_tokens=3).train()


def _run(generator: PromptGenerator) -> tuple[torch.Tensor, list[int], dict[str, torch.Tensor], int]:
    saved: dict[int, int] = {}  # distinct storages kept for backward -> bytes

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    torch.manual_seed(1)  # the same Gumbel noise for both paths
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        prompt = generator("Retrieve semantically similar text.")
    prompt.embeddings.float().square().sum().backward()
    grads = {n: p.grad.clone() for n, p in generator.model.named_parameters() if p.grad is not None}
    generator.model.zero_grad(set_to_none=True)
    return prompt.embeddings.detach(), prompt.token_ids, grads, sum(saved.values())


@pytest.mark.parametrize("kind", ["arch", "gemma3"])
def test_cast_once_gives_the_same_prompt_and_gradients(kind, tiny_model_dir, monkeypatch):
    """Qwen2-like (tied head) and Gemma 3 (tied head, scaled embeddings): bit-identical under bf16 autocast."""
    generator = _generator("arch:tiny-qwen2" if kind == "arch" else str(tiny_model_dir("gemma3")))
    fast, fast_ids, fast_grads, fast_saved = _run(generator)
    assert generator._cast is not None and generator._cast[1].dtype == torch.bfloat16
    monkeypatch.setattr(generator, "low_precision", lambda weight: weight)  # every use casts again (autocast)
    slow, slow_ids, slow_grads, slow_saved = _run(generator)
    assert torch.equal(fast, slow) and fast_ids == slow_ids
    assert fast_grads.keys() == slow_grads.keys() and len(fast_grads) > 5
    for name, grad in fast_grads.items():
        assert torch.equal(grad, slow_grads[name]), name
    vocab_matrix = generator.embedding_matrix.numel() * 2
    assert slow_saved - fast_saved >= 4 * vocab_matrix  # 3 mixtures + 3 head calls saved their own cast before


def test_without_autocast_or_when_trainable_the_weight_itself_is_used():
    generator = _generator("arch:tiny-qwen2")
    weight = generator.embedding_matrix
    assert generator.low_precision(weight) is weight
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = generator.low_precision(weight)
        assert cast.dtype == torch.bfloat16 and generator.low_precision(weight) is cast  # kept, not cast again
        with torch.no_grad():
            weight.add_(1.0)  # new values (e.g. loaded weights): cast again
        assert not torch.equal(generator.low_precision(weight), cast)
        weight.requires_grad_(True)
        assert generator.low_precision(weight) is weight
