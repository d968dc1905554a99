"""GradCache gives the same update as the plain step: chunking a contrastive batch changes memory, not maths."""

from __future__ import annotations

from dataclasses import fields

import pytest
import torch
from tiny_models import CORPUS

from promptembedder.data.datasets import TrainExample
from promptembedder.training import Trainer, TrainingConfig
from promptembedder.training.grad_cache import CachedContrastiveLoss
from promptembedder.training.losses import ContrastiveLoss

INSTRUCTION = "Retrieve semantically similar text."


def examples(document_prompt_type: str = "query") -> list[TrainExample]:
    """16 (query, positive, negative) triplets from the tiny corpus; "document": read as retrieval's documents."""
    return [TrainExample(CORPUS[i], CORPUS[i + 1], (CORPUS[i + 2],), INSTRUCTION,
                         document_prompt_type=document_prompt_type) for i in range(16)]


def make_trainer(tiny_model_dir, tmp_path, method: str, prompt_on: str, prompt_diversity: float = 0.0) -> Trainer:
    config = TrainingConfig(
        method=method, prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("bert")),
        output_dir=str(tmp_path / method), batch_size=16, do_eval=False, device="cpu", prompt_on=prompt_on,
        grad_cache_chunk_size=5, prompt_diversity=prompt_diversity,
    )
    # A second instruction for the diversity term to keep the batch's prompt apart from.
    other = TrainExample(CORPUS[20], CORPUS[21], (), "Classify the topic of the text.")
    trainer = Trainer(config, examples=[*examples(), other])
    for module in trainer.model.modules():  # dropout draws differ with the batch's shape; switch it off
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return trainer


def gradients(trainer: Trainer, cached: bool, document_prompt_type: str = "query"
              ) -> tuple[float, dict[str, torch.Tensor]]:
    trainer.model.train()
    trainer.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same Gumbel noise for both paths
    assert isinstance(trainer.loss, CachedContrastiveLoss)  # grad_cache_chunk_size=5; the same loss without it:
    plain = ContrastiveLoss(**{f.name: getattr(trainer.loss, f.name) for f in fields(ContrastiveLoss)})
    value = (trainer.loss if cached else plain)(examples(document_prompt_type))
    value.backward()
    loss = value.item()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.optimizer.zero_grad(set_to_none=True)
    return loss, grads


@pytest.mark.parametrize(("method", "prompt_on", "prompt_diversity", "documents"), [
    ("promptembedder", "both", 0.0, "query"), ("promptembedder", "query", 0.0, "query"),
    ("promptembedder", "query", 0.5, "query"), ("lora", "both", 0.0, "query"), ("lora", "query", 0.0, "query"),
    ("prompt-tuning", "both", 0.0, "query"), ("promptembedder", "both", 0.5, "document"),
    ("lora", "both", 0.0, "document")])
def test_grad_cache_gives_the_plain_gradients(tiny_model_dir, tmp_path, method, prompt_on, prompt_diversity,
                                              documents):
    """Chunks of 5 texts give the loss and the gradient of every trainable parameter of the whole batch, the
    prompt-diversity term's included, and with retrieval's documents read under their own (default) prompt."""
    trainer = make_trainer(tiny_model_dir, tmp_path, method, prompt_on, prompt_diversity)
    plain_loss, plain = gradients(trainer, cached=False, document_prompt_type=documents)
    cached_loss, cached = gradients(trainer, cached=True, document_prompt_type=documents)
    assert cached_loss == pytest.approx(plain_loss, rel=1e-5)
    assert any(g.abs().max() > 0 for g in plain.values())  # there is a gradient to compare
    for name, grad in plain.items():
        torch.testing.assert_close(cached[name], grad, atol=1e-6, rtol=1e-3, msg=name)
