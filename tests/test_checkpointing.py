"""Gradient checkpointing of E: the same gradients as without it (plain step and GradCache), E really recomputed."""

from __future__ import annotations

import pytest
import torch
from tiny_models import CORPUS

from promptembedder.data.datasets import TrainExample
from promptembedder.models.activation_checkpointing import transformer_blocks
from promptembedder.training import Trainer, TrainingConfig

INSTRUCTION = "Retrieve semantically similar text."
EXAMPLES = [TrainExample(CORPUS[i], CORPUS[i + 1], (CORPUS[i + 2],), INSTRUCTION) for i in range(8)]


def gradients(tiny_model_dir, tmp_path, method: str, embedding: str, checkpointing: bool, grad_cache: bool):
    torch.manual_seed(0)
    config = TrainingConfig(method=method, prompting_model=str(tiny_model_dir("llama")),
                            embedding_model=str(tiny_model_dir(embedding)), output_dir=str(tmp_path / "run"),
                            batch_size=8, do_eval=False, device="cpu", prompt_on="query",
                            grad_cache_chunk_size=3 if grad_cache else None, gradient_checkpointing=checkpointing,
                            read_once=False)  # the full forward both times (a checkpointed E never reads once)
    trainer = Trainer(config, examples=EXAMPLES)
    trainer.model.train()
    block = transformer_blocks(trainer.model.backbone.model)[0]
    calls = []
    inner = next(m for m in block.children() if any(True for _ in m.parameters()))
    inner.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    torch.manual_seed(1)  # the same Gumbel noise and dropout for both runs
    value = trainer.loss(EXAMPLES)  # GradCache's when grad_cache_chunk_size is set
    value.backward()
    loss = value.item()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss, grads, calls


@pytest.mark.parametrize(("method", "embedding"), [("promptembedder", "bert"), ("promptembedder", "llama-embed"),
                                                   ("lora", "bert")])
@pytest.mark.parametrize("grad_cache", [False, True])
def test_checkpointing_gives_the_plain_gradients(tiny_model_dir, tmp_path, method, embedding, grad_cache):
    """Frozen E in eval mode (PromptEmbedder) and E with LoRA in training mode (dropout replayed), with GradCache."""
    plain_loss, plain, plain_calls = gradients(tiny_model_dir, tmp_path, method, embedding, False, grad_cache)
    loss, checkpointed, calls = gradients(tiny_model_dir, tmp_path, method, embedding, True, grad_cache)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert any(g.abs().max() > 0 for g in plain.values())
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    # The block ran once more for each graph-building call: its activations were recomputed in backward.
    assert calls.count(True) > plain_calls.count(True) and len(calls) > len(plain_calls)
