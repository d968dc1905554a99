"""Named multi-task training sources, their mixing, unbiased dev subsets and per-task dev sets."""

from __future__ import annotations

import json
import random
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

    class Encoder:  # any model with an embedder's `encode` mines: no Embedder needed
        def __init__(self) -> None:
            self.sides: list[str] = []

        def encode(self, texts, *, batch_size, prompt_type, show_progress_bar, convert_to_numpy):
            self.sides.append(prompt_type)
            return HashingEmbedder().encode(texts, batch_size=batch_size, prompt_type=prompt_type)

    encoder = Encoder()
    assert S.mine_negatives(encoder, data) == {"q": "near"} and encoder.sides == ["query", "document"]


MINING_WORDS = ("apple", "river", "stone", "cloud", "music", "paper", "light", "green", "house", "water", "market",
                "train", "doctor", "claim", "protein", "cell", "study", "result", "energy", "planet", "garden",
                "window", "bread", "story", "table")


def mining_data() -> RetrievalData:
    rng = random.Random(0)

    def sentence(n: int) -> str:
        return " ".join(rng.choice(MINING_WORDS) for _ in range(n))

    corpus = {f"d{i}": sentence(rng.randint(3, 40)) for i in range(90)}
    corpus["d90"] = corpus["d3"]  # a duplicate abstract: its score ties with d3's
    queries = {f"q{i}": sentence(rng.randint(2, 8)) for i in range(20)}
    qrels = {q: {f"d{rng.randrange(91)}": 1 for _ in range(1 + i % 2)} for i, q in enumerate(queries)}
    queries["q20"], qrels["q20"] = corpus["d3"], {"d5": 1}  # its best uncited documents tie: d3 and d90
    queries["q21"], qrels["q21"] = corpus["d8"], {"d8": 1, "d21": 1}  # its top two are cited
    return RetrievalData(queries, corpus, qrels)


#: What `mine_negatives` gave on `mining_data` with a tiny BERT before it moved into data/ (it ranked with
#: evaluation's encoder and `rank` then); the SciFact negatives cached so far were mined that way.
RECORDED_NEGATIVES = {"q0": "d71", "q1": "d36", "q2": "d17", "q3": "d46", "q4": "d73", "q5": "d23", "q6": "d7",
                      "q7": "d71", "q8": "d54", "q9": "d36", "q10": "d25", "q11": "d35", "q12": "d46", "q13": "d26",
                      "q14": "d61", "q15": "d70", "q16": "d63", "q17": "d63", "q18": "d86", "q19": "d46",
                      "q20": "d3", "q21": "d14"}


def test_mined_negatives_are_those_mined_before(tiny_model_dir) -> None:
    from promptembedder.training.build import bare_embedder

    model = bare_embedder(str(tiny_model_dir("bert")), device="cpu")
    assert S.mine_negatives(model, mining_data()) == RECORDED_NEGATIVES
    # top_k=0 leaves 2 candidates (the most any query cites): q21 cites both of its, so it gets none
    assert S.mine_negatives(model, mining_data(), top_k=0) == {q: d for q, d in RECORDED_NEGATIVES.items()
                                                               if q != "q21"}


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

    def load_model() -> HashingEmbedder:
        calls.append(1)
        return HashingEmbedder(dim=256)

    monkeypatch.setattr(S, "cache_dir", lambda: tmp_path)
    first = S.load_training_data(["scifact-train"], embedding_model="model-a", negatives_model=load_model)
    second = S.load_training_data(["scifact-train"], embedding_model="model-a", negatives_model=load_model)
    assert calls == [1] and first == second
    # the key the cached files already carry: sha256 of (resolved E, the training claims' ids)
    assert [p.name for p in tmp_path.glob("mined/*.json")] == ["scifact-train-e5f315b3db31b692.json"]
    assert len(first) > 700 and all(e.negatives[0] != e.positive for e in first)
    assert {e.instruction for e in first} == {TASKS["scifact"].instruction}
    assert S.SOURCES["scifact-train"]("model-a") == first  # cached: no model needed
    with pytest.raises(ValueError, match="no hard negatives of model-b are cached .*give load_training_data a "
                                         "negatives_model"):
        S.SOURCES["scifact-train"]("model-b")
