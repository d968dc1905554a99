"""The shipped real models: all-MiniLM-L6-v2 as a bare backbone and Gemma 3 270M as the Prompting LLM.

Slow (real weights; the first Gemma build de-quantises a GGUF for ~60 s, then it is cached), but run in CI.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptembedder import PromptEmbedder
from promptembedder.hub.registry import minilm_path
from promptembedder.training.infonce import info_nce

pytestmark = pytest.mark.slow

EATING, BREAD, HORSE = "A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."
INSTRUCTION = "Retrieve semantically similar text."


@pytest.fixture(scope="module")
def minilm():
    return PromptEmbedder(embedding_model="minilm-l6", num_soft_tokens=0, device="cpu").eval()


@pytest.fixture(scope="module")
def gemma_minilm():
    return PromptEmbedder(prompting_model="gemma3-270m", embedding_model="minilm-l6", device="cpu").eval()


def test_minilm_bare_backbone_similarities(minilm):
    """Bare all-MiniLM-L6-v2 (mean pooling, normalised) reproduces its known STS similarities."""
    assert minilm.config.pooling == "mean" and minilm.embedding_dim == 384
    eating, bread, horse = minilm.encode([EATING, BREAD, HORSE])
    np.testing.assert_allclose(np.linalg.norm([eating, bread, horse], axis=1), 1.0, atol=1e-5)
    similar, different = float(eating @ bread), float(eating @ horse)
    assert similar == pytest.approx(0.7553, abs=1e-3)
    assert different == pytest.approx(0.2474, abs=1e-3)
    assert similar > 0.6 and different < 0.3


def test_minilm_matches_sentence_transformers(minilm):
    """The bare backbone gives the same vectors as sentence-transformers' own pipeline for the model."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    texts = [EATING, BREAD, HORSE, "The quick brown fox jumps over the lazy dog."]
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(minilm.encode(texts), expected, atol=1e-5)


def test_gemma_prompting_model_builds_and_encodes(gemma_minilm):
    """Gemma 3 270M -> MiniLM: W is lstsq-initialised, the prompt decodes to text, encode gives unit 384-d rows."""
    model = gemma_minilm.eval()
    assert model.alignment.init_method.startswith("lstsq")
    decoded = model.decode_prompt(INSTRUCTION)
    assert isinstance(decoded, str) and decoded.strip()
    out = model.encode([EATING, BREAD, HORSE], instruction=INSTRUCTION)
    assert out.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert float(out[0] @ out[1]) > float(out[0] @ out[2])


def test_gemma_gradient_reaches_p_and_w_not_e(gemma_minilm):
    """One InfoNCE backward on a 4-text batch: every trainable weight of P and W gets a gradient, E gets none."""
    model = gemma_minilm
    model.zero_grad(set_to_none=True)
    model.train()
    try:
        queries = model.embed([EATING, HORSE, "A monkey is playing drums.", "It is raining."], INSTRUCTION)
        with torch.no_grad():
            docs = model.embed([BREAD, "A woman rides a white horse.", "Someone plays the drums.", "Rain falls."],
                               INSTRUCTION, "document")
        info_nce(queries, docs).backward()
    finally:
        model.eval()
    p_params = [(n, p) for n, p in model.generator.named_parameters() if p.requires_grad]
    assert p_params
    missing = [n for n, p in p_params if p.grad is None]
    assert not missing
    assert sum(bool(p.grad.abs().sum() > 0) for _, p in p_params) == len(p_params)
    assert model.alignment.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.model.parameters())
    model.zero_grad(set_to_none=True)
