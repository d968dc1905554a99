"""prompt-table: one learned static prompt per training instruction, the nearest row for an unseen instruction,
trained by the ordinary trainer and reloaded by `load_embedder`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from promptembedder.auto import load_embedder
from promptembedder.data.datasets import TrainExample
from promptembedder.models.config import BaselineConfig
from promptembedder.models.prompt_table import PromptTableEmbedder
from promptembedder.training import Trainer, TrainingConfig

INSTRUCTIONS = ["Retrieve semantically similar text.", "Classify the sentiment of a movie review."]


def examples() -> list[TrainExample]:
    pairs = [("a man plays guitar", "a man is playing a guitar"), ("a cat sleeps", "the cat is sleeping"),
             ("two dogs run", "dogs are running"), ("a boy eats", "the boy is eating")]
    return [TrainExample(q, d, (), instruction) for instruction in INSTRUCTIONS[:1] for q, d in pairs]


def table(model_dir: Path) -> PromptTableEmbedder:
    config = BaselineConfig(method="prompt-table", embedding_model=str(model_dir), instructions=list(INSTRUCTIONS))
    return PromptTableEmbedder(config, device="cpu")


def test_rows_and_fallback(tiny_model_dir) -> None:
    model = table(tiny_model_dir("llama"))
    with torch.no_grad():
        model.prompts[1].add_(1.0)
    assert model.prompt_for(INSTRUCTIONS[1]) is model.prompts[1]
    # An unseen wording of the second instruction falls back to its row, by E's embedding of the instruction.
    assert model.nearest(INSTRUCTIONS[1] + " ") == 1 and model.nearest(INSTRUCTIONS[0] + " ") == 0
    model._fallback.clear()
    model._keys = torch.eye(2)  # the lookup itself: the most similar key wins
    model._embed_instructions = lambda texts: torch.tensor([[0.2, 0.9]])  # type: ignore[method-assign]
    assert model.nearest("something else") == 1
    mean = model.prompt_for(None)
    torch.testing.assert_close(mean, (model.prompts[0] + model.prompts[1]) / 2)


def test_needs_its_instructions(tiny_model_dir) -> None:
    with pytest.raises(ValueError, match="training instructions"):
        PromptTableEmbedder(BaselineConfig(method="prompt-table", embedding_model=str(tiny_model_dir("llama"))))


def test_trains_only_the_batch_row_and_reloads(tiny_model_dir, tmp_path: Path) -> None:
    config = TrainingConfig(method="prompt-table", embedding_model=str(tiny_model_dir("llama")), device="cpu",
                            output_dir=str(tmp_path / "run"), max_steps=3, batch_size=4, learning_rate=1e-2,
                            do_eval=False, show_progress_bar=False, save_steps=1000, seed=0)
    trainer = Trainer(config, examples=examples())
    before = [p.detach().clone() for p in trainer.model.prompts]
    trainer.train()
    model = trainer.model
    assert model.config.instructions == INSTRUCTIONS[:1]
    assert not torch.equal(model.prompts[0], before[0])
    texts = ["a man plays guitar", "a cat sleeps"]
    reloaded = load_embedder(tmp_path / "run" / "final", device="cpu")
    assert isinstance(reloaded, PromptTableEmbedder)
    torch.testing.assert_close(reloaded.embed(texts, INSTRUCTIONS[0]), model.eval().embed(texts, INSTRUCTIONS[0]))


def test_unused_rows_stay_put(tiny_model_dir, tmp_path: Path) -> None:
    """A row whose instruction is not in the batch gets no gradient, so AdamW (decay, momentum) leaves it alone."""
    data = examples() + [TrainExample("great film", "a wonderful movie", (), INSTRUCTIONS[1])]
    config = TrainingConfig(method="prompt-table", embedding_model=str(tiny_model_dir("llama")), device="cpu",
                            output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, learning_rate=1e-2,
                            do_eval=False, show_progress_bar=False, save_model=False, seed=0)
    trainer = Trainer(config, examples=data)
    row = trainer.model.row[INSTRUCTIONS[1]]
    before = trainer.model.prompts[row].detach().clone()
    trainer.train()  # batches of 4 hold one instruction each: the lone review example never fills one
    torch.testing.assert_close(trainer.model.prompts[row], before)
