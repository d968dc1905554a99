"""A new method needs only the training interface: the unchanged Trainer trains it (docs/architecture.md)."""

from __future__ import annotations

import csv
import zlib
from types import SimpleNamespace

import torch
from torch import nn

from promptembedder.data.datasets import TrainExample
from promptembedder.models.trainable import TrainableEmbedder
from promptembedder.training import Trainer, TrainingConfig

INSTRUCTION = "Find a paraphrase."
EXAMPLES = [TrainExample(f"a man is eating food number {i}", f"a man eats a meal {i}", (f"a horse runs {i}",),
                         INSTRUCTION) for i in range(8)]


class BagOfWords(TrainableEmbedder):
    """Hashed word vectors averaged; queries read the instruction as words, documents do not (prompt_on query)."""

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(prompt_on="query")
        self.embedding_dim = 16
        self.words = nn.EmbeddingBag(512, 16, mode="mean")
        self.scale = nn.Parameter(torch.ones(16))
        self.taus: list[float] = []

    def embed(self, texts, instruction=None, prompt_type="query", normalize=True):
        if self.uses_prompt(prompt_type) and instruction:
            texts = [f"{instruction} {t}" for t in texts]
        ids = [torch.tensor([zlib.crc32(w.encode()) % 512 for w in t.split()]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        vectors = self.words(torch.cat(ids), offsets) * self.scale
        return nn.functional.normalize(vectors, dim=-1) if normalize else vectors

    def param_groups(self, alignment_learning_rate):
        """The scale learns at the 'alignment' rate, as W does in PromptEmbedder."""
        return [{"params": [self.scale], "lr": alignment_learning_rate}, {"params": list(self.words.parameters())}]

    def set_tau(self, tau):
        self.taus.append(tau)


def test_the_trainer_trains_a_new_method_through_its_interface(tmp_path):
    torch.manual_seed(0)
    model = BagOfWords()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = TrainingConfig(output_dir=str(tmp_path / "run"), device="cpu", max_steps=4, batch_size=4,
                            learning_rate=0.1, alignment_learning_rate=0.01, tau_start=2.0, tau_end=0.5,
                            logging_steps=1, do_eval=False, save_model=False, show_progress_bar=False, seed=0)
    trainer = Trainer(config, model=model, examples=EXAMPLES)
    assert [g["initial_lr"] for g in trainer.optimizer.param_groups] == [0.01, 0.1]  # the model's groups
    result = trainer.train()
    assert result.steps == 4 and result.trainable_parameters == 512 * 16 + 16
    assert model.taus[0] == 2.0 and model.taus[-1] == 0.5 and len(model.taus) == 4
    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4]
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
