"""Which examples each optimizer step, micro-batch and rank sees: deterministic in (seed, epoch), so a resumed
run sees the same batches, and one instruction (one soft prompt) per batch: a task with several wordings
(`TrainExample.instructions`) gets one of them drawn per batch, the same draw on every rank and on resume."""

from __future__ import annotations

import dataclasses
import random

from ..data.datasets import TrainExample


def make_batches(examples: list[TrainExample], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices for one epoch, each from one instruction, or one task's wordings (one soft prompt
    per batch), whose documents are all read alike (`TrainExample.document_prompt_type`).

    Incomplete batches are dropped so every rank gets an equal share and in-batch negatives are never too few.
    """
    rng = random.Random(seed * 100_003 + epoch)
    groups: dict[tuple[str | tuple[str, ...] | None, str], list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault((example.instructions or example.instruction, example.document_prompt_type), []).append(i)
    batches = []
    for indices in groups.values():
        indices = indices[:]
        rng.shuffle(indices)
        batches += [indices[i : i + batch_size] for i in range(0, len(indices) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    if not batches:
        raise ValueError(f"no data set has a full batch of {batch_size} examples: lower batch_size")
    return batches


def draw_instructions(examples: list[TrainExample], batches: list[list[int]], seed: int, epoch: int
                      ) -> list[str | None]:
    """Each batch's instruction: one of its task's wordings, drawn from a stream of its own (seeded by seed and
    epoch, so the batches themselves do not change with the wordings), or its examples' one instruction."""
    rng = random.Random(f"instructions-{seed}-{epoch}")
    drawn = []
    for batch in batches:
        example = examples[batch[0]]
        drawn.append(rng.choice(example.instructions) if example.instructions else example.instruction)
    return drawn


def instructions_of(examples: list[TrainExample]) -> tuple[str | None, ...]:
    """Every instruction training can use, in the order first seen (all wordings of a task with several)."""
    return tuple(dict.fromkeys(i for e in examples for i in (e.instructions or (e.instruction,))))


class StepBatches:
    """The global batch of each step (`batch_size` x ranks x accumulation steps), cut into this rank's micro-batches;
    one epoch's batches are kept at a time."""

    def __init__(self, examples: list[TrainExample], batch_size: int, accumulation: int, seed: int, world: int,
                 rank: int):
        self.examples, self.batch_size, self.accumulation = examples, batch_size, accumulation
        self.seed, self.world, self.rank = seed, world, rank
        self.global_batch = batch_size * world
        self._epochs: dict[int, tuple[list[list[int]], list[str | None]]] = {}
        self.per_epoch = len(self._make(0)[0])

    def _make(self, epoch: int) -> tuple[list[list[int]], list[str | None]]:
        batches = make_batches(self.examples, self.global_batch * self.accumulation, self.seed, epoch)
        return batches, draw_instructions(self.examples, batches, self.seed, epoch)

    def __call__(self, step: int) -> tuple[int, int, list[list[TrainExample]]]:
        """(epoch, examples in the global batch, this rank's micro-batches) of the step after `step` steps."""
        epoch, position = divmod(step, self.per_epoch)
        if epoch not in self._epochs:
            self._epochs = {epoch: self._make(epoch)}
        batches, instructions = self._epochs[epoch]
        indices, instruction = batches[position], instructions[position]
        micro = []
        for m in range(self.accumulation):
            chunk = indices[m * self.global_batch : (m + 1) * self.global_batch]
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            micro.append([self._worded(self.examples[i], instruction) for i in mine])
        return epoch, len(indices), micro

    @staticmethod
    def _worded(example: TrainExample, instruction: str | None) -> TrainExample:
        return example if example.instruction == instruction else dataclasses.replace(example, instruction=instruction)
