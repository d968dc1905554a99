"""The warm document cache of `bench train --doc-cache warm`: the steady state of epochs after the first."""

from __future__ import annotations

import pytest
import torch
from tiny_models import CORPUS

from promptembedder.bench.training import fill_document_cache
from promptembedder.data.datasets import TrainExample
from promptembedder.training import Trainer, TrainingConfig

EXAMPLES = [TrainExample(CORPUS[i], CORPUS[i + 1], (CORPUS[i + 2],), "Retrieve similar text.") for i in range(8)]


def make(tiny_model_dir, tmp_path, prompt_on: str) -> Trainer:
    torch.manual_seed(0)
    config = TrainingConfig(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("bert")),
                            output_dir=str(tmp_path), batch_size=8, do_eval=False, device="cpu", prompt_on=prompt_on)
    return Trainer(config, examples=EXAMPLES)


def test_warm_cache_gives_the_same_loss_without_embedding_documents(tiny_model_dir, tmp_path):
    cold = make(tiny_model_dir, tmp_path / "cold", "query")
    torch.manual_seed(1)
    cold_loss = cold.loss(EXAMPLES).item()
    warm = make(tiny_model_dir, tmp_path / "warm", "query")
    assert fill_document_cache(warm, EXAMPLES, batch_size=4) == len({t for e in EXAMPLES
                                                                    for t in (e.positive, *e.negatives)})
    calls = []
    embed = warm.model.embed
    warm.model.embed = lambda texts, *args, **kwargs: calls.append(texts) or embed(texts, *args, **kwargs)
    torch.manual_seed(1)
    assert warm.loss(EXAMPLES).item() == pytest.approx(cold_loss, rel=1e-6)
    assert calls == []  # E never ran on a document


def test_warm_cache_needs_a_frozen_document_side(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="trains the document side"):
        fill_document_cache(make(tiny_model_dir, tmp_path, "both"), EXAMPLES, batch_size=4)
