"""Shared by the PromptEmbedder tests (test_model.py, test_model_save.py): texts, a tiny model, a few training steps."""

from __future__ import annotations

import torch

from promptembedder import PromptEmbedder
from promptembedder.training.infonce import info_nce

INSTRUCTION = "Retrieve semantically similar text."
QUERIES = ["A man is eating food.", "A monkey is playing drums.", "The girl is carrying a baby.",
           "A cheetah is running behind its prey."]
DOCS = ["A man is eating a piece of bread.", "Someone in a gorilla costume is playing a set of drums.",
        "A woman is eating an apple in the kitchen.", "The dog is chasing a ball across the green field."]
TEXTS = [*QUERIES, "It was raining heavily when we arrived at the station."]


def build(tiny_model_dir, p="llama", e="bert", **kwargs):
    return PromptEmbedder(prompting_model=str(tiny_model_dir(p)), embedding_model=str(tiny_model_dir(e)),
                          device="cpu", **kwargs)


def contrastive_loss(model):
    return info_nce(model.embed(QUERIES, INSTRUCTION, "query"), model.embed(DOCS, INSTRUCTION, "document"))


def train_steps(model, steps=3, lr=1e-2):
    """A few AdamW steps so trained weights really differ from what the references would rebuild."""
    model.train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        contrastive_loss(model).backward()
        optimizer.step()
    return model.eval()


def relative_difference(a, b):
    return float((a - b).norm() / b.norm())

