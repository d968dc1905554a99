"""Named multi-task training sources, their mixing, unbiased dev subsets and per-task dev sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import needs_data
from test_evaluation import HashingEmbedder

from promptembedder.data import sources as S
from promptembedder.data.datasets import TrainExample
from promptembedder.data.task_sets import RetrievalData
from promptembedder.evaluation import TASKS, in_domain_tasks
from promptembedder.training import TrainingConfig
from promptembedder.training.dev_selection import check_eval_task, dev_metric, sample_dev


def test_dev_subset_is_a_fixed_sample_across_the_file() -> None:
    picked = sample_dev(list(range(1500)), 200)
    assert len(picked) == 200 and picked == sorted(picked) and picked == sample_dev(list(range(1500)), 200)
    assert max(picked) > 1000  # STS-B dev's first 1,000 pairs are all MSRvid: the sample must reach past them
    assert sample_dev([1, 2, 3], None) == [1, 2, 3] and sample_dev([1, 2, 3], 10) == [1, 2, 3]


def test_eval_task_must_have_a_dev_split() -> None:
    assert check_eval_task("SciFact") == "scifact"
    assert dev_metric("SciFact") == "scifact ndcg_at_10" and dev_metric("sts-b") == "sts-b spearman"
    with pytest.raises(ValueError, match=r"eval_task 'banking77' has no dev split.*'sts-b', 'scifact'"):
        TrainingConfig(eval_task="banking77")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        TrainingConfig(eval_task="nope")


def example(i: int, instruction: str) -> TrainExample:
    return TrainExample(f"q{i}", f"p{i}", (), instruction)


def test_mix_by_size_and_by_weight() -> None:
    sources = {"a": [example(i, "A") for i in range(30)], "b": [example(i, "B") for i in range(10)]}
    assert len(S.mix_sources(sources)) == 40
    mixed = S.mix_sources(sources, {"a": 1, "b": 3})
    assert len(mixed) == 40 and sum(e.instruction == "B" for e in mixed) == 30  # b oversampled to 3/4
    with pytest.raises(ValueError, match=r"task_weights names \['c'\]"):
        S.mix_sources(sources, {"c": 1})
    assert S.parse_task_weights("esnli=1, scifact-train=2.5") == {"esnli": 1.0, "scifact-train": 2.5}
    with pytest.raises(ValueError, match="'esnli' is not NAME=WEIGHT"):
        S.parse_task_weights("esnli")
    assert TrainingConfig(task_weights="a=2").task_weights == {"a": 2.0}


def test_unknown_source_name_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"unknown training source 'scifact'.*'scifact-train'"):
        S.load_training_data(["scifact"])


def test_mined_negative_is_the_best_uncited_document() -> None:
    data = RetrievalData({"q": "red apple pie"}, {"cited": "apple pie recipe", "near": "red apple pie baked",
                                                  "far": "fast cars"}, {"q": {"cited": 1}})
    assert S.mine_negatives(HashingEmbedder(), data) == {"q": "near"}


def test_in_domain_tasks_read_from_the_run(tmp_path: Path) -> None:
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "promptembedder_config.json").write_text("{}")
    (tmp_path / "training_config.json").write_text(json.dumps({"train_data": ["esnli", "mrpc-train"]}))
    assert in_domain_tasks(tmp_path / "final") == {"mrpc"}
    (tmp_path / "training_config.json").write_text(json.dumps({"train_data": ["all"]}))
    assert in_domain_tasks(tmp_path / "final") == {"sts-b", "scifact", "banking77", "mrpc"}
    assert in_domain_tasks(tmp_path / "other" / "model") == set()
    assert in_domain_tasks(tmp_path) == set()  # not a saved model (e.g. `minilm-l6` run inside a run folder)


@needs_data
def test_real_sources_have_one_instruction_each() -> None:
    mrpc = S.SOURCES["mrpc-train"]("unused")
    assert len(mrpc) == 2753 - 57  # paraphrases minus those that are STS-B test pairs
    banking = S.SOURCES["banking77-train"]("unused")
    assert len(banking) > 9900 and {e.instruction for e in banking} == {TASKS["banking77"].instruction}
    from promptembedder.data.task_sets import load_banking77

    data = load_banking77("train")
    intent = dict(zip(data.texts, data.labels, strict=False))
    assert all(intent[e.query] == intent[e.positive] != intent[e.negatives[0]] for e in banking[:500])
    esnli = S.SOURCES["esnli"]("unused")
    assert len(esnli) > 5800 and all(len(e.negatives) == 1 for e in esnli)


@needs_data
def test_scifact_negatives_are_mined_once_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_loader(reference, device=None):
        calls.append(reference)
        return HashingEmbedder(dim=256)

    monkeypatch.setattr(S, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr("promptembedder.auto.load_embedder", fake_loader)
    first = S.SOURCES["scifact-train"]("model-a")
    second = S.SOURCES["scifact-train"]("model-a")
    assert calls == ["model-a"] and first == second and len(list(tmp_path.glob("mined/*.json"))) == 1
    assert len(first) > 700 and all(e.negatives[0] != e.positive for e in first)
    assert {e.instruction for e in first} == {TASKS["scifact"].instruction}
