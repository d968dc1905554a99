"""Which examples each optimizer step, micro-batch and rank sees: deterministic in (seed, epoch), so a resumed
run sees the same batches, and one instruction (one soft prompt) per batch."""

from __future__ import annotations

import random

from ..data import TrainExample


def make_batches(examples: list[TrainExample], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of example indices for one epoch, each from one instruction (one soft prompt per batch).

    Incomplete batches are dropped so every rank gets an equal share and in-batch negatives are never too few.
    """
    rng = random.Random(seed * 100_003 + epoch)
    groups: dict[str | None, list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(example.instruction, []).append(i)
    batches = []
    for indices in groups.values():
        indices = indices[:]
        rng.shuffle(indices)
        batches += [indices[i : i + batch_size] for i in range(0, len(indices) - batch_size + 1, batch_size)]
    rng.shuffle(batches)
    if not batches:
        raise ValueError(f"no data set has a full batch of {batch_size} examples: lower batch_size")
    return batches


class StepBatches:
    """The global batch of each step (`batch_size` x ranks x accumulation steps), cut into this rank's micro-batches;
    one epoch's batches are kept at a time."""

    def __init__(self, examples: list[TrainExample], batch_size: int, accumulation: int, seed: int, world: int,
                 rank: int):
        self.examples, self.batch_size, self.accumulation = examples, batch_size, accumulation
        self.seed, self.world, self.rank = seed, world, rank
        self.global_batch = batch_size * world
        self._epochs: dict[int, list[list[int]]] = {}
        self.per_epoch = len(self._make(0))

    def _make(self, epoch: int) -> list[list[int]]:
        return make_batches(self.examples, self.global_batch * self.accumulation, self.seed, epoch)

    def __call__(self, step: int) -> tuple[int, int, list[list[TrainExample]]]:
        """(epoch, examples in the global batch, this rank's micro-batches) of the step after `step` steps."""
        epoch, position = divmod(step, self.per_epoch)
        if epoch not in self._epochs:
            self._epochs = {epoch: self._make(epoch)}
        indices = self._epochs[epoch][position]
        micro = []
        for m in range(self.accumulation):
            chunk = indices[m * self.global_batch : (m + 1) * self.global_batch]
            mine = chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            micro.append([self.examples[i] for i in mine])
        return epoch, len(indices), micro
