"""Calibration: the bare all-MiniLM-L6-v2 (mean pooling, max length 256) reproduces MTEB's scores on all six tasks.

One evaluation of MiniLM (module-scoped) serves every assertion; it is the slowest test here (minutes: SciFact's
5,183 abstracts dominate) and the one that ties our scoring to MTEB's published numbers.
"""

from __future__ import annotations

import pytest

from promptembedder import evaluation as E
from promptembedder.data import data_dir

#: task -> (expected main score, tolerance): MTEB's published figure where one exists, else an independent script's.
CALIBRATION = {
    "sts-b": (82.03, 0.05),
    "sick-r": (77.58, 0.05),
    "scifact": (64.51, 0.1),
    "banking77": (80.04, 0.1),  # MTEB publishes 80.04; one generator across experiments gives 79.66 (see docs)
    "mrpc": (83.69, 0.1),  # max AP is the Manhattan AP, 83.73; the cosine AP is 83.69 (see below)
    "twentynewsgroups": (47.15, 0.5),  # k-means varies with the BLAS
}


@pytest.fixture(scope="module")
def minilm_results() -> dict:
    try:
        data_dir()
    except FileNotFoundError:
        pytest.skip("shared data directory not found (set PROMPTEMBEDDER_DATA)")
    from promptembedder.auto import load_embedder

    model = load_embedder("minilm-l6", device="cpu")
    assert model.backbone.max_length == 256  # its sentence-transformers config, as MTEB ran it
    return E.evaluate(model, list(CALIBRATION), batch_size=64, show_progress_bar=False)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(CALIBRATION))
def test_minilm_matches_mteb(minilm_results: dict, task: str) -> None:
    expected, tolerance = CALIBRATION[task]
    assert minilm_results[task]["main_score"] == pytest.approx(expected, abs=tolerance)


@pytest.mark.slow
def test_calibration_sizes(minilm_results: dict) -> None:
    assert minilm_results["scifact"]["num_queries"] == 300 and minilm_results["scifact"]["num_documents"] == 5183
    assert minilm_results["banking77"]["num_test"] == 3080 and minilm_results["mrpc"]["num_pairs"] == 1725
    assert minilm_results["twentynewsgroups"]["num_texts"] == 7532
    assert minilm_results["sts-b"]["num_pairs"] == 1379 and minilm_results["sick-r"]["num_pairs"] == 9927


@pytest.mark.slow
def test_mrpc_max_ap_is_manhattan_not_cosine(minilm_results: dict) -> None:
    """For unit vectors cosine, dot and Euclidean rank alike; Manhattan does not, and here it is MTEB's max."""
    mrpc = minilm_results["mrpc"]
    assert mrpc["cosine_ap"] == pytest.approx(83.69, abs=0.02)
    assert mrpc["dot_ap"] == pytest.approx(mrpc["cosine_ap"], abs=1e-6)
    assert mrpc["euclidean_ap"] == pytest.approx(mrpc["cosine_ap"], abs=1e-6)
    assert mrpc["max_ap"] == mrpc["manhattan_ap"] == pytest.approx(83.73, abs=0.02)
