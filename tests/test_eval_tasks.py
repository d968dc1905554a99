"""Each task type's metric on small hand-made cases with known answers, and the registry/runner on a fake embedder."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_evaluation import HashingEmbedder

from promptembedder import evaluation as E
from promptembedder.data.task_sets import LabelledPair, LabelledTexts, RetrievalData

# ---------------------------------------------------------------------------------------------------
# Retrieval: nDCG@10 by pytrec_eval, checked against the formula by hand
# ---------------------------------------------------------------------------------------------------


def test_ndcg_matches_hand_computation() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d1": 1, "d3": 1}}
    run = {"q1": {"d1": 0.2, "d2": 0.9},            # relevant at rank 2: 1 / log2(3)
           "q2": {"d1": 0.9, "d2": 0.5, "d3": 0.1}}  # ranks 1 and 3: (1 + 1/2) / (1 + 1/log2(3))
    q1 = 1 / math.log2(3)
    q2 = 1.5 / (1 + 1 / math.log2(3))
    scores = E.retrieval_scores(run, qrels)
    assert scores["ndcg_at_10"] == pytest.approx(100 * (q1 + q2) / 2)
    assert scores["main_score"] == scores["ndcg_at_10"]
    assert scores["mrr"] == pytest.approx(100 * (0.5 + 1) / 2)


def test_unranked_judged_query_counts_as_zero() -> None:
    scores = E.retrieval_scores({"q1": {"d1": 1.0}}, {"q1": {"d1": 1}, "q2": {"d2": 1}})
    assert scores["ndcg_at_10"] == pytest.approx(50.0)


def test_rank_keeps_top_k_by_cosine() -> None:
    queries = np.array([[1.0, 0.0]])
    docs = np.array([[0.0, 5.0], [3.0, 0.1], [1.0, 1.0]])  # unnormalised: cosine, not dot, must decide
    run = E.rank(queries, docs, ["q"], ["a", "b", "c"], top_k=2)
    assert set(run["q"]) == {"b", "c"}
    assert run["q"]["b"] > run["q"]["c"]


# ---------------------------------------------------------------------------------------------------
# Classification: MTEB's undersampling and the logistic-regression probe
# ---------------------------------------------------------------------------------------------------

LABELS = ["a"] * 10 + ["b"] * 12 + ["c"] * 9


def test_undersample_draws_like_mteb() -> None:
    draws = E.undersample(LABELS, n_experiments=3, samples_per_label=2, seed=7)
    order = list(range(len(LABELS)))
    for chosen in draws:
        np.random.RandomState(7).shuffle(order)  # a fresh generator every experiment, as mteb
        expected, counts = [], {}
        for i in order:
            if counts.get(LABELS[i], 0) < 2:
                expected.append(i)
                counts[LABELS[i]] = counts.get(LABELS[i], 0) + 1
        assert chosen == expected
        assert sorted(LABELS[i] for i in chosen) == ["a", "a", "b", "b", "c", "c"]
    assert draws[0] != draws[1]


def test_undersample_stream_continues_one_generator() -> None:
    one = E.undersample(LABELS, n_experiments=2, samples_per_label=2, seed=7, sampling="stream")
    two = E.undersample(LABELS, n_experiments=2, samples_per_label=2, seed=7)
    assert one[0] == two[0] and one[1] != two[1]
    with pytest.raises(ValueError, match="sampling must be one of"):
        E.undersample(LABELS, sampling="mteb2")


def test_probe_accuracy_on_known_cases() -> None:
    rng = np.random.RandomState(0)
    centres = {"a": [5.0, 0.0], "b": [0.0, 5.0], "c": [-5.0, -5.0]}
    train = np.array([centres[label] for label in LABELS]) + rng.normal(0, 0.1, (len(LABELS), 2))
    test_labels = ["a", "b", "c", "c"]
    test = np.array([centres[label] for label in test_labels])
    draws = E.undersample(LABELS, n_experiments=2, samples_per_label=3)
    assert E.probe_scores(train, LABELS, test, test_labels, draws)["accuracy"] == pytest.approx(100.0)
    # Swap the test labels of the two "c" texts for "a": exactly half the predictions are then wrong.
    wrong = ["a", "b", "a", "a"]
    assert E.probe_scores(train, LABELS, test, wrong, draws)["accuracy"] == pytest.approx(50.0)


# ---------------------------------------------------------------------------------------------------
# Pair classification: max AP over four similarities
# ---------------------------------------------------------------------------------------------------


def test_max_ap_matches_hand_computation() -> None:
    left = np.array([[1.0, 0.0]] * 4)
    right = np.array([[1.0, 0.0], [1.0, 0.2], [1.0, 0.5], [0.0, 1.0]])  # cosine decreasing down the list
    labels = [1, 0, 1, 0]  # positives at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    scores = E.pair_scores(left, right, labels)
    assert scores["cosine_ap"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert scores["max_ap"] == max(scores[k] for k in ("cosine_ap", "dot_ap", "euclidean_ap", "manhattan_ap"))
    assert scores["main_score"] == scores["max_ap"]


def test_max_ap_picks_the_best_similarity() -> None:
    # Same direction, different lengths: cosine cannot separate the pairs, Euclidean distance can.
    left = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    right = np.array([[1.0, 0.0], [1.1, 0.0], [4.0, 0.0], [5.0, 0.0]])
    scores = E.pair_scores(left, right, [1, 1, 0, 0])
    assert scores["euclidean_ap"] == pytest.approx(100.0)
    assert scores["cosine_ap"] == pytest.approx(50.0)
    assert scores["max_ap"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------------
# Clustering: V-measure of MiniBatchKMeans
# ---------------------------------------------------------------------------------------------------


def test_v_measure_of_separated_clusters() -> None:
    rng = np.random.RandomState(0)
    labels = ["x"] * 30 + ["y"] * 30 + ["z"] * 30
    centres = {"x": [10.0, 0.0], "y": [0.0, 10.0], "z": [-10.0, -10.0]}
    points = np.array([centres[label] for label in labels]) + rng.normal(0, 0.1, (90, 2))
    assert E.cluster_scores(points, labels)["v_measure"] == pytest.approx(100.0)
    # Labels that ignore the geometry (each cluster split evenly across two labels) lose information.
    mixed = (["p", "q"] * 45)
    assert E.cluster_scores(points, mixed)["v_measure"] < 5.0


def test_sts_scores_are_rank_correlations() -> None:
    scores = E.sts_scores([0.0, 1.0, 2.0, 3.0], [0.1, 0.2, 0.9, 0.95])
    assert scores["spearman"] == pytest.approx(100.0) and scores["main_score"] == scores["spearman"]
    assert E.sts_scores([0.0, 1.0, 2.0], [3.0, 2.0, 1.0])["spearman"] == pytest.approx(-100.0)


# ---------------------------------------------------------------------------------------------------
# The registry and runner: one entry per task, documents get prompt_type "document"
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def toy_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    retrieval = RetrievalData({"q1": "red apples", "q2": "fast cars"},
                              {"d1": "apples are red fruit", "d2": "cars can be fast", "d3": "blue sky"},
                              {"q1": {"d1": 1}, "q2": {"d2": 1}})
    pool = LabelledTexts(["red apple", "green apple", "fast car", "slow car"], ["fruit", "fruit", "car", "car"])
    monkeypatch.setitem(E.TASKS, "toy-ret", E.TaskSpec("toy-ret", "ToyRet", ("test",), lambda s: retrieval,
                                                       "Find it.", "retrieval", "document"))
    monkeypatch.setitem(E.TASKS, "toy-cls", E.TaskSpec("toy-cls", "ToyCls", ("test",),
                                                       lambda s: E.ClassificationData(pool, pool),
                                                       "Classify.", "classification"))
    pairs = [LabelledPair("red apple", "red apple", 1), LabelledPair("red apple", "fast car", 0)]
    monkeypatch.setitem(E.TASKS, "toy-pair", E.TaskSpec("toy-pair", "ToyPair", ("test",), lambda s: pairs,
                                                        None, "pair_classification"))
    monkeypatch.setitem(E.TASKS, "toy-clu", E.TaskSpec("toy-clu", "ToyClu", ("test",), lambda s: pool,
                                                       "Topic.", "clustering"))


def test_runner_scores_every_type_with_the_right_prompt_types(toy_tasks: None) -> None:
    model = HashingEmbedder()
    results = E.evaluate(model, ["toy-ret", "toy-cls", "toy-pair", "toy-clu"], batch_size=8,
                         in_domain={"toy-cls"})
    assert {name: r["type"] for name, r in results.items()} == {
        "toy-ret": "retrieval", "toy-cls": "classification", "toy-pair": "pair_classification",
        "toy-clu": "clustering"}
    assert results["toy-ret"]["main_score"] == pytest.approx(100.0)  # bag of words finds both
    assert results["toy-pair"]["max_ap"] == pytest.approx(100.0)
    assert results["toy-cls"]["in_domain"] and not results["toy-ret"]["in_domain"]
    assert all(r["evaluation_time"] >= 0 for r in results.values())  # wall seconds per task, as MTEB reports
    documents = [call for call in model.calls if call[2] == "document"]
    assert documents and all(instruction is None for _, instruction, _ in documents)
    assert {"apples are red fruit"} <= {t for texts, _, _ in documents for t in texts}
    assert all(call[1] == "Find it." for call in model.calls if "red apples" in call[0])


def test_symmetric_retrieval_gives_documents_the_query_treatment(toy_tasks: None, monkeypatch) -> None:
    spec = E.TASKS["toy-ret"]
    monkeypatch.setitem(E.TASKS, "toy-ret", E.TaskSpec(spec.name, spec.mteb_name, spec.splits, spec.loader,
                                                       spec.instruction, "retrieval", "query"))
    model = HashingEmbedder()
    E.evaluate(model, ["toy-ret"])
    assert {(instruction, prompt_type) for _, instruction, prompt_type in model.calls} == {("Find it.", "query")}


def test_select_tasks_by_type_name_and_all() -> None:
    assert E.select_tasks("all") == ["sts-b", "sick-r", "scifact", "banking77", "mrpc", "twentynewsgroups"]
    assert E.select_tasks("instructions") == ["nli-follow", "unseen-tasks", "unseen-wording"]
    assert E.select_tasks("sts") == ["sts-b", "sick-r"]
    assert E.select_tasks("pair,retrieval,mrpc") == ["mrpc", "scifact"]
    assert E.select_tasks("clustering, Banking77") == ["twentynewsgroups", "banking77"]
    with pytest.raises(ValueError, match=r"unknown task 'nope'.*known tasks: sts-b"):
        E.select_tasks("sts,nope")
    with pytest.raises(ValueError, match="no tasks given"):
        E.select_tasks(" , ")


def test_task_spec_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown type 'ranking'"):
        E.TaskSpec("x", "X", ("test",), lambda s: [], type="ranking")


def test_tables_per_type_and_averages(toy_tasks: None, tmp_path) -> None:
    results = {"m": E.evaluate(HashingEmbedder(), ["toy-ret", "toy-pair"], in_domain={"toy-pair"})}
    tables = E.results_tables(results)
    assert [t.title for t in tables] == ["Retrieval (nDCG@10 x100)", "Pair classification (max AP x100)",
                                         "Average per task type (x100)"]
    assert tables[1].caption and "in-domain" in tables[1].caption
    path = E.write_results(tmp_path / "r.json", results)
    import json

    saved = json.loads(path.read_text())["models"][0]
    assert saved["average"] == pytest.approx(np.mean([r["main_score"] for r in results["m"].values()]))
    assert saved["average_by_type"]["retrieval"] == pytest.approx(results["m"]["toy-ret"]["main_score"])
    assert saved["average_spearman"] is None
    with pytest.raises(ValueError, match="exists; choose another file or pass --overwrite"):
        E.check_writable(path)
    assert E.check_writable(path, overwrite=True) == path
    with pytest.raises(ValueError, match="is a directory"):
        E.check_writable(tmp_path)
