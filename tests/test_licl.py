"""The licl reader: single- and multi-field rows, the train split as its five draws, errors naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptembedder.data.datasets import DataError
from promptembedder.data.licl import licl_task, licl_tasks, load_licl


def licl(root: Path, name: str, template: str, rows: list[dict], options: tuple[str, ...] = ("no", "yes"),
         **config: object) -> Path:
    folder = root / "licl" / name
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"name": name, "task_type": "classification", "options": list(options), "instruction": "Say yes or no.",
                "instruction_2": "Answer no or yes.", "inference_prompt": template, **config}
    (folder / "config.json").write_text(json.dumps(settings), encoding="utf-8")
    for split in [f"train_{i}" for i in range(5)] + ["test"]:
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_single_and_pair_tasks_render_their_fields(tmp_path: Path) -> None:
    licl(tmp_path, "single", "Review: {text}\nSentiment:", [{"text": "good", "label": "yes", "id": "a"},
                                                            {"text": "bad", "label": "no"}])
    licl(tmp_path, "pair", "premise: {premise}\nhypothesis: {hypothesis}\nlabel:",
         [{"premise": "P", "hypothesis": "H", "label": "yes"}, {"premise": "P2", "hypothesis": "", "label": "no"}])
    assert licl_tasks(tmp_path) == ["pair", "single"]
    task = licl_task("pair", tmp_path)
    assert (task.fields, task.options, task.instruction_2) == (("premise", "hypothesis"), ("no", "yes"),
                                                               "Answer no or yes.")
    assert load_licl("single", "test", tmp_path).texts == ["good", "bad"]
    data = load_licl("pair", "train_3", tmp_path)
    assert data.texts == ["premise: P\nhypothesis: H", "premise: P2\nhypothesis:"]
    assert data.labels == ["yes", "no"]
    assert len(load_licl("single", "train", tmp_path).texts) == 2  # the five draws, shared rows once


@pytest.mark.parametrize(("row", "message"), [
    ('{"text": "x", "label": "maybe"}', "single/test.jsonl:2: label 'maybe' is not among the task's options"),
    ('{"label": "no"}', "single/test.jsonl:2: missing key 'text'"),
    ('{"text": " ", "label": "no"}', "single/test.jsonl:2: every text field ['text'] is empty"),
    ('{"text": 3, "label": "no"}', "single/test.jsonl:2: 'text' must be a string"),
    ('{"text": "x", ', "single/test.jsonl:2: malformed JSON"),
])
def test_bad_rows_name_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    folder = licl(tmp_path, "single", "{text}\nLabel:", [{"text": "fine", "label": "yes"}])
    (folder / "test.jsonl").write_text('{"text": "fine", "label": "yes"}\n' + row + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_licl("single", "test", tmp_path)


@pytest.mark.parametrize(("config", "message"), [
    ({"task_type": "generation"}, "task_type 'generation' is not supported"),
    ({"options": ["yes"]}, "'options' must list at least two distinct label names"),
    ({"instruction_2": ""}, "'instruction_2' must be a non-empty string"),
    ({"inference_prompt": "Label: {text}"}, "'inference_prompt' must name the text fields"),
])
def test_bad_config_is_refused(tmp_path: Path, config: dict, message: str) -> None:
    licl(tmp_path, "task", "{text}\nLabel:", [{"text": "x", "label": "yes"}], **config)
    with pytest.raises(DataError, match="task/config.json: " + message):
        load_licl("task", "test", tmp_path)


def test_unknown_task_and_split(tmp_path: Path) -> None:
    licl(tmp_path, "task", "{text}\nLabel:", [{"text": "x", "label": "yes"}])
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_licl("task", "dev", tmp_path)
    with pytest.raises(FileNotFoundError, match="licl task 'other' not found"):
        load_licl("other", "test", tmp_path)
