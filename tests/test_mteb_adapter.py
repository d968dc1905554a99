"""The MTEB 2.x adapter: protocol contract with a fake embedder, and an offline mteb.evaluate run on STS-B."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from promptembedder.data.datasets import STS_INSTRUCTION, data_dir
from promptembedder.evaluation import mteb_model as A
from promptembedder.evaluation.mteb_tasks import local_sts_task
from promptembedder.models.embedder import Embedder

HAS_MTEB = importlib.util.find_spec("mteb") is not None
needs_mteb = pytest.mark.skipif(not HAS_MTEB, reason="mteb not installed (pip install 'promptembedder[mteb]')")


class RecordingEmbedder(Embedder):
    """Sum of word vectors seeded by crc32 (deterministic, nearly tie-free cosines so float32 vs float64 scoring
    cannot reorder Spearman ranks); records the instruction and prompt_type of every embed call."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.embedding_dim = dim
        self.weight = torch.nn.Parameter(torch.ones(dim))  # something for the revision fingerprint to hash
        self.calls: list[tuple[list[str], str | None, str]] = []

    def vector(self, text: str) -> np.ndarray:
        out = np.zeros(self.embedding_dim)
        for word in text.lower().split():
            out += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(self.embedding_dim)
        return out

    def embed(self, texts: list[str], instruction: str | None = None, prompt_type: str = "query",
              normalize: bool = True) -> torch.Tensor:
        self.calls.append((list(texts), instruction, prompt_type))
        return torch.tensor(np.stack([self.vector(t) for t in texts]), dtype=torch.float32) * self.weight

    def seen(self) -> set[tuple[str | None, str]]:
        return {(instruction, prompt_type) for _, instruction, prompt_type in self.calls}


@pytest.fixture(scope="module", autouse=True)
def _offline() -> Iterator[None]:
    """Everything here must work with the Hub unreachable."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        yield


def test_missing_mteb_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mteb", None)  # makes `import mteb` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'promptembedder\[mteb\]'"):
        A.MTEBModel(RecordingEmbedder())


def test_module_imports_without_mteb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mteb", None)
    try:
        importlib.reload(A)  # mteb is only imported lazily
    finally:
        monkeypatch.undo()
        importlib.reload(A)


# ---------------------------------------------------------------------------------------------------
# Contract with a fake embedder
# ---------------------------------------------------------------------------------------------------


def _metadata(name: str):  # noqa: ANN202 -- mteb's TaskMetadata, imported lazily
    import mteb

    return mteb.get_task(name).metadata


def _loader(texts: list[str], batch_size: int = 2) -> torch.utils.data.DataLoader:
    """A DataLoader yielding MTEB's text batches, {"text": [...]}."""
    from datasets import Dataset

    return torch.utils.data.DataLoader(Dataset.from_dict({"text": texts}), batch_size=batch_size)


@needs_mteb
def test_implements_encoder_protocol() -> None:
    from mteb.models import EncoderProtocol, ModelMeta

    model = A.MTEBModel(RecordingEmbedder(), model_name="toy")
    assert isinstance(model, EncoderProtocol)
    meta = model.mteb_model_meta
    assert isinstance(meta, ModelMeta)
    assert meta.name == "promptembedder/toy" and meta.embed_dim == 16
    assert meta.similarity_fn_name.value == "cosine" and meta.use_instructions


@needs_mteb
def test_revision_distinguishes_weights_and_instructions() -> None:
    embedder = RecordingEmbedder()
    rev = A.MTEBModel(embedder).revision
    assert A.MTEBModel(embedder).revision == rev
    assert A.MTEBModel(embedder, task_instructions={"STSBenchmark": "x"}).revision != rev
    with torch.no_grad():
        embedder.weight.mul_(2)
    assert A.MTEBModel(embedder).revision != rev
    assert A.MTEBModel(embedder, revision="v1").revision == "v1"


@needs_mteb
def test_encode_shapes_order_and_empty_texts() -> None:
    from mteb.types import PromptType

    embedder = RecordingEmbedder()
    model = A.MTEBModel(embedder)
    texts = ["a cat", "the dog barks loudly", "", "a cat sat"]
    out = model.encode(_loader(texts), task_metadata=_metadata("STSBenchmark"), hf_split="test",
                       hf_subset="default", prompt_type=None, batch_size=3)
    assert isinstance(out, np.ndarray) and out.shape == (4, 16)
    for i in (0, 1, 3):
        np.testing.assert_allclose(out[i], embedder.vector(texts[i]), rtol=1e-6)
    assert not out[2].any()  # an empty text gets a zero vector instead of crashing the run
    assert embedder.seen() == {(STS_INSTRUCTION, "query")}
    sims = model.similarity(out[:2], out)
    assert tuple(sims.shape) == (2, 4)
    pairwise = model.similarity_pairwise(out[:2], out[:2])
    np.testing.assert_allclose(np.asarray(pairwise), [1.0, 1.0], rtol=1e-5)
    assert PromptType.query.value == "query"


@needs_mteb
@pytest.mark.parametrize(
    ("task", "prompt_type", "expected"),
    [
        ("STSBenchmark", None, (STS_INSTRUCTION, "query")),
        ("SummEval", None, (STS_INSTRUCTION, "query")),
        ("SprintDuplicateQuestions", None, (STS_INSTRUCTION, "query")),
        ("SciFact", "query", (A.RETRIEVAL_INSTRUCTION, "query")),
        ("SciFact", "document", (None, "document")),
        ("AskUbuntuDupQuestions", "document", (None, "document")),
        ("Banking77Classification", None, (A.GENERIC_INSTRUCTION, "query")),
        ("TwentyNewsgroupsClustering", None, (A.GENERIC_INSTRUCTION, "query")),
    ],
)
def test_default_instructions_per_task_type(task: str, prompt_type: str | None,
                                            expected: tuple[str | None, str]) -> None:
    from mteb.types import PromptType

    embedder = RecordingEmbedder()
    model = A.MTEBModel(embedder)
    mteb_prompt_type = PromptType(prompt_type) if prompt_type else None
    model.encode(_loader(["some text", "other text"]), task_metadata=_metadata(task), hf_split="test",
                 hf_subset="default", prompt_type=mteb_prompt_type)
    assert embedder.seen() == {expected}


@needs_mteb
def test_overrides() -> None:
    from mteb.types import PromptType

    model = A.MTEBModel(
        RecordingEmbedder(),
        task_instructions={"STSBenchmark": None, "SciFact": "Find evidence.",
                           "NFCorpus": {"query": "Q.", "document": "D."}},
        type_instructions={"Clustering": "Cluster."},
    )
    sts, scifact, nfcorpus = _metadata("STSBenchmark"), _metadata("SciFact"), _metadata("NFCorpus")
    assert model.instruction_for(sts, None) == (None, "query")
    assert model.instruction_for(scifact, PromptType.query) == ("Find evidence.", "query")
    assert model.instruction_for(scifact, PromptType.document) == (None, "document")
    assert model.instruction_for(nfcorpus, PromptType.document) == ("D.", "document")
    assert model.instruction_for(_metadata("TwentyNewsgroupsClustering"), None) == ("Cluster.", "query")
    with_prompts = A.MTEBModel(RecordingEmbedder(), use_task_prompts=True)
    assert with_prompts.instruction_for(_metadata("Banking77Classification"), None)[0] == \
        "Given a online banking query, find the corresponding intents"
    with pytest.raises(ValueError, match="unknown sides"):
        A.MTEBModel(RecordingEmbedder(), task_instructions={"SciFact": {"passage": "x"}})


# ---------------------------------------------------------------------------------------------------
# Offline mteb.evaluate on STS-B test, from the shared data
# ---------------------------------------------------------------------------------------------------


def _run_mteb(embedder: Embedder, task: str = "sts-b") -> float:
    import mteb

    result = mteb.evaluate(A.MTEBModel(embedder), local_sts_task(task), cache=None, co2_tracker=False,
                           encode_kwargs={"batch_size": 128}, show_progress_bar=False)
    assert not result.exceptions
    (task_result,) = result.task_results
    return 100 * task_result.get_score()


@pytest.fixture(scope="module")
def shared_data() -> None:
    try:
        data_dir()
    except FileNotFoundError:
        pytest.skip("shared data directory not found (set PROMPTEMBEDDER_DATA)")


@needs_mteb
@pytest.mark.filterwarnings("ignore:The task 'STSBenchmark' is superseded")
def test_mteb_evaluate_offline_matches_our_evaluation_fake(shared_data: None) -> None:
    from promptembedder.evaluation import evaluate

    embedder = RecordingEmbedder(dim=64)
    score = _run_mteb(embedder)
    assert embedder.seen() == {(STS_INSTRUCTION, "query")}  # STS: both sides, same instruction
    ours = evaluate(RecordingEmbedder(dim=64), tasks="sts-b", batch_size=128)["sts-b"]["spearman"]
    assert score == pytest.approx(ours, abs=1e-3)


@needs_mteb
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The task 'STSBenchmark' is superseded")
def test_mteb_evaluate_offline_minilm_calibration(shared_data: None) -> None:
    from promptembedder import PromptEmbedder

    # The same number test_evaluation pins for promptembedder.evaluation (both measure 82.0325): MTEB's own
    # scoring of the bare backbone through this adapter reproduces the offline evaluation.
    minilm = PromptEmbedder(embedding_model="minilm-l6", num_soft_tokens=0, device="cpu")
    assert _run_mteb(minilm) == pytest.approx(82.03, abs=0.05)
