"""Batches of a task with several wordings: one wording per batch, drawn anew per batch, the same on every rank and
on a rebuild (a resume)."""

from __future__ import annotations

import pytest

from promptembedder.data.datasets import TrainExample
from promptembedder.training.batching import StepBatches, instructions_of, make_batches

WORDINGS = ("Find the same intent.", "Retrieve a query with the same purpose.", "Match the intent.")


def examples() -> list[TrainExample]:
    task = [TrainExample(f"q{i}", f"p{i}", instructions=WORDINGS) for i in range(64)]
    plain = [TrainExample(f"s{i}", f"t{i}", instruction="Retrieve similar text.") for i in range(32)]
    return task + plain


def test_each_batch_draws_one_wording_of_its_task() -> None:
    data = examples()
    batches = StepBatches(data, batch_size=4, accumulation=2, seed=3, world=2, rank=0)
    seen = set()
    for step in range(batches.per_epoch * 2):
        _, size, micro = batches(step)
        assert size == 16
        worded = {e.instruction for m in micro for e in m}
        assert len(worded) == 1  # one instruction per step, across its micro-batches
        if micro[0][0].instructions:
            seen |= worded
        else:
            assert worded == {"Retrieve similar text."}
    assert seen == set(WORDINGS)


def test_documents_read_differently_never_share_a_batch() -> None:
    """One instruction, two sources: retrieval's documents and a symmetric task's; a batch holds one kind, since
    the loss reads a batch's documents one way."""
    data = [TrainExample(f"q{i}", f"p{i}", instruction="Find it.", document_prompt_type="document") for i in range(8)]
    data += [TrainExample(f"s{i}", f"t{i}", instruction="Find it.") for i in range(8)]
    batches = make_batches(data, batch_size=4, seed=0, epoch=0)
    assert len(batches) == 4
    assert all(len({data[i].document_prompt_type for i in batch}) == 1 for batch in batches)


def test_draws_are_the_same_on_every_rank_and_on_a_rebuild() -> None:
    data = examples()
    first = [StepBatches(data, 4, 1, seed=7, world=2, rank=r) for r in (0, 1)]
    again = StepBatches(data, 4, 1, seed=7, world=2, rank=1)
    for step in range(12):
        rank0, rank1 = (b(step)[2][0] for b in first)
        assert rank0[0].instruction == rank1[0].instruction
        assert again(step)[2][0] == rank1
    other_seed = StepBatches(data, 4, 1, seed=8, world=2, rank=1)
    assert [other_seed(s)[2] for s in range(12)] != [again(s)[2] for s in range(12)]


def test_wordings_do_not_change_the_batches_and_all_count_as_training_instructions() -> None:
    data = examples()
    single = [TrainExample(e.query, e.positive, instruction=e.instruction) for e in data]
    assert make_batches(data, 8, 1, 0) == make_batches(single, 8, 1, 0)
    assert instructions_of(data) == (*WORDINGS, "Retrieve similar text.")
    assert instructions_of(single) == (WORDINGS[0], "Retrieve similar text.")


def test_an_instruction_outside_the_wordings_is_refused() -> None:
    assert TrainExample("q", "p", instructions=list(WORDINGS)).instruction == WORDINGS[0]
    with pytest.raises(ValueError, match="is not one of the example's instructions"):
        TrainExample("q", "p", instruction="Other.", instructions=WORDINGS)
