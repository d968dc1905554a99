"""nli-follow, unseen-tasks and unseen-wording on fake embedders and a tiny static prompt: known answers, the 50 an
instruction-ignoring model must get, and the registry entries."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluation import HashingEmbedder

from promptembedder import evaluation as E
from promptembedder.data.task_sets import LabelledTexts
from promptembedder.evaluation.classification import ClassificationData
from promptembedder.evaluation.nli_follow import (
    FollowItem,
    InstructionFollowingData,
    direction_scores,
    evaluate_instruction_following,
)
from promptembedder.evaluation.unseen_tasks import InstructedTask, evaluate_unseen_tasks
from promptembedder.evaluation.unseen_wording import evaluate_unseen_wording
from promptembedder.models.baselines import PromptTuningEmbedder
from promptembedder.models.config import BaselineConfig


def write_toy_licl(root: Path, train_text: Callable[[int, int], str], test: list[tuple[str, str]]) -> None:
    """A two-label licl task, root/licl/toy: five training files of four rows (text `train_text(file, row)`, labels
    alternating no/yes) and `test` as (text, label) rows."""
    folder = root / "licl" / "toy"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "name": "toy", "task_type": "classification", "options": ["no", "yes"], "instruction": "Say yes or no.",
        "instruction_2": "Answer no or yes.", "inference_prompt": "Text: {text}\nLabel:"}), encoding="utf-8")
    for i in range(5):
        (folder / f"train_{i}.jsonl").write_text("".join(
            json.dumps({"text": train_text(i, j), "label": ["no", "yes"][j % 2]}) + "\n" for j in range(4)))
    (folder / "test.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in test))

ITEMS = [FollowItem("a man plays a guitar on stage", "a man plays guitar", "nobody plays any instrument"),
         FollowItem("two dogs run in a green park", "dogs are running outside", "the dogs sleep indoors"),
         FollowItem("a woman slices an onion", "a woman cuts an onion", "a woman eats a cake"),
         FollowItem("children swim in the sea", "kids are in the water", "children are at school")]
WORDINGS = {"training": ("entail", "contradict"), "held_out": ("implies", "refutes")}


class FollowingEmbedder(HashingEmbedder):
    """Bag of words; under a contradiction wording the query vector is negated, which reverses every ranking."""

    def embed(self, texts, instruction=None, prompt_type="query", normalize=True):
        out = super().embed(texts, instruction, prompt_type, normalize)
        flip = prompt_type == "query" and instruction in ("contradict", "refutes")
        return -out if flip else out


def test_direction_scores_by_hand() -> None:
    entail = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    contradict = np.array([[0.1, 0.9], [0.1, 0.9], [0.5, 0.5]])
    scores = direction_scores(entail, contradict)
    assert scores["entailment"] == pytest.approx(100 * 1.5 / 3)
    assert scores["contradiction"] == pytest.approx(100 * 2.5 / 3)
    assert scores["paired_accuracy"] == pytest.approx(100 * 4 / 6)


def test_ignoring_the_instruction_scores_exactly_50() -> None:
    data = InstructionFollowingData(ITEMS, WORDINGS)
    scores = evaluate_instruction_following(HashingEmbedder(), data)
    assert scores["paired_accuracy"] == 50.0 and scores["main_score"] == 50.0
    assert scores["entailment"] + scores["contradiction"] == 100.0
    assert set(scores["wordings"]) == {"training", "held_out"}


def test_following_the_instruction_scores_above_50() -> None:
    scores = evaluate_instruction_following(FollowingEmbedder(), InstructionFollowingData(ITEMS, WORDINGS))
    assert scores["entailment"] == 100.0 and scores["contradiction"] == 100.0
    assert scores["wordings"]["held_out"]["paired_accuracy"] == 100.0


class BothSidesEmbedder(HashingEmbedder):
    """Under a contradiction wording both sides are negated: the instruction moves every text alike."""

    def embed(self, texts, instruction=None, prompt_type="query", normalize=True):
        out = super().embed(texts, instruction, prompt_type, normalize)
        return -out if instruction in ("contradict", "refutes") else out


class CountingEmbedder(BothSidesEmbedder):
    """Records each call's (instruction, prompt type)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str | None, str]] = []

    def embed(self, texts, instruction=None, prompt_type="query", normalize=True):
        self.calls.append((instruction, prompt_type))
        return super().embed(texts, instruction, prompt_type, normalize)


def test_hypotheses_read_without_the_instruction() -> None:
    """A prompt that moves premise and hypotheses alike cancels out when both read it, and steers when only the
    premise does; ignoring the instruction still scores exactly 50 under either reading. The plain hypotheses are
    encoded once for every wording."""
    data = InstructionFollowingData(ITEMS, WORDINGS)
    model = CountingEmbedder()
    scores = evaluate_instruction_following(model, data, batch_size=64)
    assert scores["paired_accuracy"] == 50.0 and scores["documents_without_instruction"]["paired_accuracy"] == 100.0
    assert all(w["documents_without_instruction"]["paired_accuracy"] == 100.0 for w in scores["wordings"].values())
    assert model.calls.count((None, "document")) == 1
    ignoring = evaluate_instruction_following(HashingEmbedder(), data)
    assert ignoring["paired_accuracy"] == ignoring["documents_without_instruction"]["paired_accuracy"] == 50.0


def test_static_soft_prompt_scores_exactly_50(tiny_model_dir) -> None:
    """A real model that cannot read its instruction (a tiny static prompt) lands on 50, ties or not."""
    torch.manual_seed(0)
    model = PromptTuningEmbedder(BaselineConfig(method="prompt-tuning", embedding_model=str(tiny_model_dir("bert"))),
                                 device="cpu")
    scores = evaluate_instruction_following(model, InstructionFollowingData(ITEMS, WORDINGS), batch_size=4)
    assert scores["paired_accuracy"] == 50.0


def test_nli_follow_refuses_an_override() -> None:
    with pytest.raises(ValueError, match="own pairs of instructions"):
        evaluate_instruction_following(HashingEmbedder(), InstructionFollowingData(ITEMS, WORDINGS), "x")


def _classification() -> ClassificationData:
    sports = ["the team won the match", "a goal in the final minute", "the striker scored twice",
              "the coach praised the team", "fans cheered the match"]
    money = ["the bank raised interest rates", "stocks fell on the market", "the market rallied on earnings",
             "interest on the loan rose", "the bank cut its fees"]
    texts = sports + money
    labels = ["sport"] * 5 + ["money"] * 5
    return ClassificationData(LabelledTexts(texts, labels), LabelledTexts(texts, labels))


class WordingEmbedder(HashingEmbedder):
    """Reads its text under the wording it was 'trained' on; under any other wording it sees noise."""

    def embed(self, texts, instruction=None, prompt_type="query", normalize=True):
        out = super().embed(texts, instruction, prompt_type, normalize)
        if instruction == "topic":
            return out
        return torch.from_numpy(np.random.RandomState(len(texts)).randn(*out.shape)).float()


def test_unseen_tasks_mean_over_tasks() -> None:
    tasks = [InstructedTask("a", _classification(), ("topic",)), InstructedTask("b", _classification(), ("other",))]
    scores = evaluate_unseen_tasks(WordingEmbedder(), tasks, n_experiments=2, samples_per_label=2)
    assert set(scores["per_task"]) == {"a", "b"}
    assert scores["main_score"] == pytest.approx(np.mean(list(scores["per_task"].values())))
    assert scores["per_task"]["a"] > scores["per_task"]["b"]


def test_unseen_wording_drop() -> None:
    tasks = [InstructedTask("a", _classification(), ("topic", "subject", "theme"))]
    scores = evaluate_unseen_wording(WordingEmbedder(), tasks, n_experiments=2, samples_per_label=2)
    task = scores["per_task"]["a"]
    assert set(task["held_out"]) == {"subject", "theme"}
    assert scores["drop"] == pytest.approx(task["training_wording"] - task["held_out_wording"]) and scores["drop"] > 0
    assert evaluate_unseen_wording(HashingEmbedder(), tasks, n_experiments=2, samples_per_label=2)["drop"] == 0.0


def test_registered_with_their_own_instructions() -> None:
    assert E.select_tasks("instruction_following,unseen_tasks,unseen_wording") == [
        "nli-follow", "unseen-tasks", "unseen-wording"]
    with pytest.raises(ValueError, match="own instructions"):
        E.evaluate(HashingEmbedder(), ["nli-follow"], instructions={"nli-follow": "say"})


def test_readers_on_fixture_files(tmp_path, monkeypatch) -> None:
    """nli-follow: one item per premise with both labels (its first of each); licl: pool = the five draws, a seeded
    test subset, the task's own instruction."""

    from promptembedder.data.datasets import DATA_ENV_VAR
    from promptembedder.evaluation.nli_follow import follow_items
    from promptembedder.evaluation.unseen_tasks import licl_instructed

    (tmp_path / "esnli").mkdir()
    (tmp_path / "esnli" / "esnli_test.csv").write_text(
        "idx,gold_label,Sentence1,Sentence2\n0,neutral,P one,n\n1,entailment,P one,e1\n2,contradiction,P one,c1\n"
        "3,entailment,P one,e2\n4,entailment,P two,e3\n5,contradiction,P three,c3\n6,contradiction,P three,c4\n"
        "7,entailment,P three,e4\n", encoding="utf-8")
    write_toy_licl(tmp_path, lambda i, j: f"t{i}{j}", [(f"q{j}", "yes") for j in range(9)])
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert follow_items() == [FollowItem("P one", "e1", "c1"), FollowItem("P three", "e4", "c3")]
    task = licl_instructed("licl/toy", test=5)
    assert (task.name, task.instructions) == ("licl/toy", ("Say yes or no.",))
    assert len(task.data.train.texts) == 20 and len(task.data.test.texts) == 5
    assert task.data.test.texts == sorted(task.data.test.texts)  # file order kept
