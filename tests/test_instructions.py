"""The instruction catalogue: enough wordings per task, held-out wordings and tasks never trained on, checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptembedder.data.datasets import NLI_INSTRUCTION, STS_INSTRUCTION, data_dir
from promptembedder.data.instructions import (
    catalogue,
    held_out_instructions,
    load_catalogue,
    training_instructions,
    unseen_tasks,
)
from promptembedder.evaluation.tasks import TASKS

#: The lead's list (written down before any run): licl tasks never trained on, for the unseen-task test.
UNSEEN = ("yahoo_answers_topics", "senteval_subj", "ethos", "rct20k", "pun_detection", "silicone_dyda_da",
          "stance_feminist", "semeval_absa_restaurant", "covid_fake_news", "medical_question_pairs")


def test_every_task_has_its_own_wordings_three_paraphrases_and_held_out_ones() -> None:
    data = catalogue()
    assert len(data.train) >= 20
    for task in data.train:
        assert len(training_instructions(task)) >= 3, task
        assert held_out_instructions(task), task
        assert len(training_instructions(task)) + len(held_out_instructions(task)) >= 4, task
    assert len({w for words in data.train.values() for w in words}) >= 60


def test_first_wordings_are_the_evaluations_and_sources_instructions() -> None:
    assert training_instructions("nli-entailment")[0] == NLI_INSTRUCTION
    assert training_instructions("sts")[0] == STS_INSTRUCTION
    for task in ("banking77", "mrpc", "scifact"):
        assert training_instructions(task)[0] == TASKS[task].instruction


def test_unseen_and_excluded_tasks_are_never_trained_on() -> None:
    assert set(unseen_tasks()) == {f"licl/{t}" for t in UNSEEN} | {"twentynewsgroups"}
    assert {"licl/ag_news", "licl/trec", "licl/sst2"} <= set(catalogue().not_trained)
    with pytest.raises(KeyError, match="never trained on"):
        training_instructions("licl/ethos")
    with pytest.raises(KeyError, match="no instructions for task 'nope'"):
        held_out_instructions("nope")


def have_licl() -> bool:
    try:
        return (data_dir() / "licl").is_dir()
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not have_licl(), reason="needs ../shared/data/licl")
def test_licl_wordings_are_the_datas_own() -> None:
    from promptembedder.data.licl import licl_task, licl_tasks

    data = catalogue()
    names = set(licl_tasks())
    for task in data.train:
        if task.startswith("licl/"):
            config = licl_task(task.removeprefix("licl/"))
            assert training_instructions(task)[0] == config.instruction
            assert held_out_instructions(task)[0] == config.instruction_2
    covered = {t.removeprefix("licl/") for t in (*data.train, *data.unseen, *data.not_trained)}
    assert names <= covered
    trained = {w for words in data.train.values() for w in words}
    for task in data.unseen:  # an unseen task's own wordings are no trained task's either
        if task.startswith("licl/"):
            config = licl_task(task.removeprefix("licl/"))
            assert not {config.instruction, config.instruction_2} & trained, task


def write(tmp_path: Path, tasks: dict, **extra: object) -> Path:
    path = tmp_path / "instructions.json"
    path.write_text(json.dumps({"tasks": tasks, **extra}, indent=2), encoding="utf-8")
    return path


@pytest.mark.parametrize(("tasks", "extra", "message"), [
    ({"a": {"train": ["x", "y"], "held_out": ["z"]}, "b": {"train": ["z"], "held_out": ["w"]}}, {},
     "tasks.a.held_out 'z' is a training instruction of 'b'"),
    ({"a": {"train": [], "held_out": ["z"]}}, {}, "tasks.a.train must be a non-empty list"),
    ({"a": {"train": ["x", "x"], "held_out": ["z"]}}, {}, "tasks.a.train repeats an instruction"),
    ({"a": {"train": ["x"]}}, {}, "tasks.a must be an object with exactly 'train' and 'held_out'"),
    ({"a": {"train": ["x"], "held_out": ["z"]}}, {"unseen_tasks": ["a"]}, r"\['a'\] are listed as never trained on"),
])
def test_bad_catalogue_is_refused(tmp_path: Path, tasks: dict, extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_catalogue(write(tmp_path, tasks, **extra))


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "instructions.json"
    path.write_text('{\n  "tasks": {,\n}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"instructions.json:2: invalid JSON"):
        load_catalogue(path)
