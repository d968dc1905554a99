"""sentence-transformers' names on every embedder: encode_query / encode_document / similarity mean what they
mean there, and match our own `encode` and evaluation's sides."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from promptembedder.evaluation import get_task
from promptembedder.models.baselines import BackboneEmbedder
from promptembedder.models.config import BaselineConfig
from promptembedder.models.prompt_embedder import PromptEmbedder

TEXTS = ["A man is eating food.", "A monkey is playing drums.", "It was raining when we arrived."]


@pytest.fixture(scope="module")
def query_only(tiny_model_dir):
    """Documents bare, queries behind P's prompt: the two sides differ."""
    torch.manual_seed(0)
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("bert")),
                           num_soft_tokens=2, prompt_on="query", device="cpu")
    with torch.no_grad():
        model.alignment.linear.weight.normal_(0, 0.05)
    return model.eval()


def _close(a, b) -> bool:
    return np.allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_encode_query_is_the_instruction_side(query_only):
    model = query_only
    topic = "Find the topic."
    assert _close(model.encode_query(TEXTS, prompt=topic), model.encode(TEXTS, instruction=topic))
    scifact = get_task("scifact").instruction
    assert _close(model.encode_query(TEXTS, prompt_name="SciFact"), model.encode(TEXTS, instruction=scifact))
    assert _close(model.encode_query(TEXTS), model.encode(TEXTS))  # the default instruction
    assert not _close(model.encode_query(TEXTS, prompt="Find the topic."), model.encode_query(TEXTS))


def test_encode_document_is_evaluations_document_side(query_only):
    model = query_only
    bare = model.encode(TEXTS, prompt_type="document")
    assert _close(model.encode_document(TEXTS), bare)
    assert _close(model.encode_document(TEXTS, prompt_name="scifact"), bare)  # retrieval: documents bare
    assert not _close(model.encode_query(TEXTS, prompt_name="scifact"), bare)
    sts = get_task("sts-b").instruction  # symmetric: both sides read as queries under the instruction
    assert _close(model.encode_document(TEXTS, prompt_name="sts-b"), model.encode(TEXTS, instruction=sts))


def test_prompt_names_are_the_task_registry(query_only, monkeypatch):
    """`prompt_name`s are the model's `task_prompts` (sentence-transformers' `prompts`): the suite's tasks, every
    task registered in evaluation's TASKS (later ones too), or a model's own mapping."""
    from promptembedder import evaluation as E
    from promptembedder.data.instructions import SUITE_PROMPTS, TaskPrompt

    model, topic = query_only, "Identify the topic of the support ticket"
    for name, prompt in SUITE_PROMPTS.items():
        known = model.task_prompts[name]
        assert (known.instruction, known.document_prompt_type) == (prompt.instruction, prompt.document_prompt_type)
    assert "nli-follow" in model.task_prompts
    monkeypatch.setitem(E.TASKS, "tickets", E.TaskSpec("tickets", "Tickets", ("test",), lambda split: None, topic,
                                                       "clustering"))
    monkeypatch.setitem(E.TASKS, "faq", E.TaskSpec("faq", "Faq", ("test",), lambda split: None, "Find the answer",
                                                   "retrieval", "document"))
    assert _close(model.encode_query(TEXTS, prompt_name="Tickets"), model.encode(TEXTS, instruction=topic))
    assert _close(model.encode_document(TEXTS, prompt_name="tickets"), model.encode(TEXTS, instruction=topic))
    assert _close(model.encode_document(TEXTS, prompt_name="faq"), model.encode(TEXTS, prompt_type="document"))
    monkeypatch.setattr(model, "task_prompts", {"mine": TaskPrompt("Find the topic.")})
    assert _close(model.encode_query(TEXTS, prompt_name="mine"), model.encode(TEXTS, instruction="Find the topic."))
    with pytest.raises(ValueError, match=r"unknown prompt_name 'scifact' \(known tasks: mine\)"):
        model.encode_query(TEXTS, prompt_name="scifact")


def test_suite_task_names_need_no_evaluation():
    """The models layer knows the suite's task names from data; it never imports evaluation for them."""
    code = ("import sys; from promptembedder.models.embedder import TASK_PROMPTS as T; "
            "print(T['scifact'].document_prompt_type, T['sts-b'].instruction, "
            "any(m.startswith('promptembedder.evaluation') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "document" and " ".join(out[1:-1]) == get_task("sts-b").instruction and out[-1] == "False"


def test_output_types_and_truncation(query_only):
    model = query_only
    one = model.encode_query("A man is eating food.")
    assert isinstance(one, np.ndarray) and one.shape == (model.embedding_dim,)
    tensor = model.encode_document(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (3, model.embedding_dim)
    short = model.encode_query(TEXTS, truncate_dim=8)
    assert short.shape == (3, 8) and np.allclose(np.linalg.norm(short, axis=1), 1, atol=1e-5)
    full = model.encode_query(TEXTS, normalize_embeddings=False)
    assert np.allclose(model.encode_query(TEXTS, truncate_dim=8, normalize_embeddings=False), full[:, :8])


def test_bad_arguments_are_named(query_only):
    with pytest.raises(ValueError, match="not both"):
        query_only.encode_query(TEXTS, prompt="x", prompt_name="sts-b")
    with pytest.raises(ValueError, match="known tasks"):
        query_only.encode_document(TEXTS, prompt_name="no-such-task")
    with pytest.raises(ValueError, match="truncate_dim"):
        query_only.encode_query(TEXTS, truncate_dim=0)
    with pytest.raises(ValueError, match="similarity_fn_name"):
        from promptembedder.models.similarity import similarity

        similarity(torch.ones(1, 2), torch.ones(1, 2), "angle")


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_is_sentence_transformers(query_only, name, monkeypatch):
    util = pytest.importorskip("sentence_transformers.util")
    functions = {"cosine": (util.cos_sim, util.pairwise_cos_sim), "dot": (util.dot_score, util.pairwise_dot_score),
                 "euclidean": (util.euclidean_sim, util.pairwise_euclidean_sim),
                 "manhattan": (util.manhattan_sim, util.pairwise_manhattan_sim)}
    monkeypatch.setattr(query_only, "similarity_fn_name", name)
    queries, docs = query_only.encode_query(TEXTS), query_only.encode_document(TEXTS[::-1])
    all_pairs, pairwise = functions[name]
    assert torch.allclose(query_only.similarity(queries, docs), all_pairs(queries, docs), atol=1e-5)
    assert torch.allclose(query_only.similarity_pairwise(queries, docs), pairwise(queries, docs), atol=1e-5)
    assert query_only.similarity(queries[0], docs).shape == (1, 3)


def test_a_baseline_has_them_too(tiny_model_dir):
    """The hard-text baseline: encode_query puts the instruction before the text; documents read bare."""
    model = BackboneEmbedder(BaselineConfig("hard-text", str(tiny_model_dir("bert")), prompt_on="query"), device="cpu")
    topic = "Find the topic."
    assert _close(model.encode_query(TEXTS, prompt=topic), model.encode(TEXTS, instruction=topic))
    assert _close(model.encode_document(TEXTS, prompt_name="scifact"), model.encode(TEXTS, prompt_type="document"))
    assert model.similarity(model.encode_query(TEXTS), model.encode_document(TEXTS)).shape == (3, 3)
