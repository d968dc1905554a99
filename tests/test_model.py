"""PromptEmbedder end to end on tiny models: gradients, prompt cache, backbones, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_helpers import DOCS, INSTRUCTION, TEXTS, build, contrastive_loss, relative_difference, train_steps
from transformers import AutoModel, AutoTokenizer

from promptembedder import PromptEmbedderConfig


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --- gradients -----------------------------------------------------------------------------------------------


def test_gradients_reach_p_and_w_but_never_e(tiny_model_dir):
    """InfoNCE backward: every trainable parameter (P's and W's) gets a non-zero grad, E's get none; an AdamW
    step changes W and leaves E bit-identical."""
    torch.manual_seed(0)
    model = build(tiny_model_dir).train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert "alignment.linear.weight" in trainable
    assert any(n.startswith("generator.") for n in trainable)
    assert not any(n.startswith("backbone.") for n in trainable)
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in trainable.values()}
    assert not model.generator.embedding_matrix.requires_grad  # train_prompting_embeddings=False
    contrastive_loss(model).backward()
    for name, param in trainable.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert param.grad is None, name
    assert all(p.grad is None for p in model.backbone.model.parameters())
    e_before, w_before = snapshot(model.backbone.model), model.alignment.linear.weight.detach().clone()
    torch.optim.AdamW(model.trainable_parameters(), lr=1e-3).step()
    for key, value in model.backbone.model.state_dict().items():
        assert torch.equal(value, e_before[key]), key
    assert not torch.equal(model.alignment.linear.weight, w_before)


def test_train_keeps_e_in_eval_mode(tiny_model_dir):
    """model.train() trains P but leaves E in eval mode (no dropout in the frozen backbone)."""
    model = build(tiny_model_dir).train()
    assert model.generator.training and model.alignment.training
    assert not model.backbone.model.training


def test_lora_gradients_reach_only_adapters_and_w(tiny_model_dir):
    """prompting_trainable='lora': only LoRA weights of P and W are trainable and get gradients; after one step
    (LoRA B starts at zero, so A's first gradient is zero) every one of them has a non-zero gradient."""
    torch.manual_seed(0)
    model = build(tiny_model_dir, prompting_trainable="lora").train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert "alignment.linear.weight" in trainable
    lora = {n for n in trainable if "lora_" in n}
    assert lora and lora.issubset({n for n in trainable if n.startswith("generator.")})
    assert set(trainable) == lora | {"alignment.linear.weight"}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    contrastive_loss(model).backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == (name in trainable), name
    assert all(trainable[n].grad.abs().sum() > 0 for n in lora if "lora_B" in n)
    e_before = snapshot(model.backbone.model)
    optimizer.step()
    optimizer.zero_grad()
    contrastive_loss(model).backward()
    for name, param in trainable.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for key, value in model.backbone.model.state_dict().items():
        assert torch.equal(value, e_before[key]), key


def test_frozen_p_trains_only_w(tiny_model_dir):
    """prompting_trainable='frozen': W is the only trainable parameter."""
    model = build(tiny_model_dir, prompting_trainable="frozen")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["alignment.linear.weight"]


def test_without_gumbel_noise_training_prompts_are_inference_prompts(tiny_model_dir):
    """The model's gumbel_noise setting reaches P: with it off, a training-mode prompt is the eval one, every time."""
    model = build(tiny_model_dir, gumbel_noise=False)
    with torch.no_grad():
        expected = model.soft_prompt(INSTRUCTION)
        model.train()
        first, second = model.soft_prompt(INSTRUCTION), model.soft_prompt(INSTRUCTION)
    torch.testing.assert_close(first, expected)
    assert torch.equal(first, second)
    assert build(tiny_model_dir).generator.gumbel_noise


def test_prompt_on_query_leaves_documents_unprompted(tiny_model_dir):
    """prompt_on='query': documents are embedded by bare E (no P call), queries get the soft prompt."""
    model = build(tiny_model_dir, prompt_on="query").eval()
    with torch.no_grad():
        bare = model.backbone(DOCS)
        torch.testing.assert_close(model.embed(DOCS, INSTRUCTION, "document"), bare)
        assert not torch.allclose(model.embed(DOCS, INSTRUCTION, "query"), bare, atol=1e-4)
    assert not model.document_side_trainable
    assert build(tiny_model_dir).document_side_trainable


def test_training_reads_retrievals_documents_as_evaluation_does(tiny_model_dir):
    """prompt_on='both': a batch's documents take its instruction's prompt unless they are retrieval's documents
    (document_instruction None), which take the default instruction's, as `encode_document` gives them."""
    model = build(tiny_model_dir).eval()

    def no_cache(texts, instruction):
        raise AssertionError("a trainable document side is never cached")

    with torch.no_grad():
        model.alignment.linear.weight.mul_(100)  # a random tiny W hardly moves E; let the prompts show
        queries = DOCS[:1]
        _, symmetric, _ = model.embed_batch(model.training_module(), queries, DOCS, INSTRUCTION, INSTRUCTION, no_cache)
        _, retrieval, _ = model.embed_batch(model.training_module(), queries, DOCS, INSTRUCTION, None, no_cache)
        torch.testing.assert_close(symmetric, model.embed(DOCS, INSTRUCTION, "query"))
        torch.testing.assert_close(retrieval, model.embed(DOCS, None, "document"))
        assert (retrieval - symmetric).abs().max() > 1e-4  # 10x assert_close's tolerance: two different prompts


# --- the prompt cache --------------------------------------------------------------------------------------


def count_generations(model, monkeypatch):
    calls = []
    forward = model.generator.forward

    def counting(instruction):
        calls.append(instruction)
        return forward(instruction)

    monkeypatch.setattr(model.generator, "forward", counting)
    return calls


def test_encode_generates_the_prompt_once_per_instruction(tiny_model_dir, monkeypatch):
    """In eval, encode over 3 batches runs P once; another instruction runs it again."""
    model = build(tiny_model_dir).eval()
    calls = count_generations(model, monkeypatch)
    out = model.encode(TEXTS, instruction="x", batch_size=2)
    assert out.shape == (len(TEXTS), model.embedding_dim)
    assert calls == ["x"]
    model.encode(TEXTS, instruction="y", batch_size=2)
    assert calls == ["x", "y"]
    model.encode(TEXTS, instruction="x", batch_size=2)  # the cache outlives one encode call
    assert calls == ["x", "y"]


def test_cached_prompt_gives_the_same_embeddings(tiny_model_dir):
    """Embeddings from the cached prompt equal those from a freshly generated one."""
    model = build(tiny_model_dir).eval()
    batched = model.encode(TEXTS, instruction="x", batch_size=2)
    single = np.stack([model.encode(t, instruction="x") for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_train_clears_the_cache_and_training_never_caches(tiny_model_dir, monkeypatch):
    """model.train() empties the cache; in train mode (or with grad enabled) P runs on every call."""
    model = build(tiny_model_dir).eval()
    calls = count_generations(model, monkeypatch)
    with torch.no_grad():
        model.soft_prompt("x")
        model.soft_prompt("x")
    assert calls == ["x"] and "x" in model._prompt_cache
    model.train()
    assert not model._prompt_cache
    with torch.no_grad():
        model.soft_prompt("x")
        model.soft_prompt("x")
    assert calls == ["x"] * 3
    model.eval()
    model.soft_prompt("x")  # grad enabled: needs a graph, so no cache
    assert calls == ["x"] * 4 and not model._prompt_cache


def test_no_stale_prompt_after_training(tiny_model_dir, monkeypatch):
    """encode, a training step, encode again: the second encode regenerates and matches an uncached embed."""
    model = build(tiny_model_dir)
    calls = count_generations(model, monkeypatch)
    before = model.encode(TEXTS, instruction=INSTRUCTION)
    train_steps(model, steps=1, lr=0.1)
    after = model.encode(TEXTS, instruction=INSTRUCTION)
    assert calls.count(INSTRUCTION) >= 2
    uncached = model.embed(TEXTS, INSTRUCTION).detach().numpy()  # grad enabled: never cached
    np.testing.assert_allclose(after, uncached, atol=1e-6)
    assert np.abs(after - before).max() > 1e-5


def test_default_instruction_is_used_for_none(tiny_model_dir):
    """instruction=None means the config's default_instruction."""
    model = build(tiny_model_dir, default_instruction=INSTRUCTION).eval()
    np.testing.assert_array_equal(model.encode(TEXTS), model.encode(TEXTS, instruction=INSTRUCTION))
    with torch.no_grad():
        torch.testing.assert_close(model.soft_prompt(None), model.soft_prompt(INSTRUCTION))
        other = model.soft_prompt("Classify the sentiment.")
        assert relative_difference(other, model.soft_prompt(None)) > 0.05
    assert model.decode_prompt() == model.decode_prompt(INSTRUCTION)


# --- backbones -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("e", ["bert", "llama"])
@pytest.mark.parametrize("p", ["llama", "qwen2", "gemma3", "gpt2"])
def test_encode_with_each_backbone_pair(tiny_model_dir, p, e):
    """Every P (llama, qwen2, gemma3, gpt2) with every E (bert, llama): unit rows of E's width, in input order,
    the right default pooling, and a readable decoded prompt."""
    model = build(tiny_model_dir, p=p, e=e)
    hidden_e = AutoModel.from_pretrained(tiny_model_dir(e)).config.hidden_size
    assert model.embedding_dim == hidden_e
    assert model.config.pooling == ("mean" if e == "bert" else "last")
    out = model.encode(TEXTS, instruction=INSTRUCTION, batch_size=2)
    assert out.shape == (len(TEXTS), hidden_e) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out[0], out[1], atol=1e-3)
    single = model.encode(TEXTS[2], instruction=INSTRUCTION)
    np.testing.assert_allclose(single, out[2], atol=1e-5)
    decoded = model.decode_prompt(INSTRUCTION)
    assert isinstance(decoded, str)
    assert model.decode_prompt(INSTRUCTION) == decoded


def test_decode_prompt_keeps_the_training_mode(tiny_model_dir):
    """decode_prompt is deterministic even while training, and leaves the model in train mode."""
    model = build(tiny_model_dir).train()
    assert model.decode_prompt(INSTRUCTION) == model.decode_prompt(INSTRUCTION)
    assert model.training and model.generator.training


@torch.no_grad()
@pytest.mark.parametrize("e", ["bert", "llama"])
def test_bare_backbone_equals_plain_transformers(tiny_model_dir, e):
    """num_soft_tokens=0: no P, no W, and embeddings equal E's own output pooled by hand with transformers
    (mean over real tokens for bert, last real token for the llama decoder), L2-normalised."""
    model = build(tiny_model_dir, e=e, num_soft_tokens=0)
    assert model.generator is None and model.alignment is None
    assert model.decode_prompt(INSTRUCTION) == ""
    assert model.trainable_parameters() == []
    out = model.encode(TEXTS, convert_to_numpy=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir(e))
    hf_model = AutoModel.from_pretrained(tiny_model_dir(e)).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    hidden = hf_model(**batch).last_hidden_state
    mask = batch["attention_mask"]
    if e == "bert":
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    else:
        pooled = hidden[torch.arange(len(TEXTS)), mask.sum(1) - 1]
    torch.testing.assert_close(out, F.normalize(pooled, dim=-1), atol=1e-5, rtol=1e-5)


# --- input checks ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return build(tiny_model_dir).eval()


def test_encode_empty_list(tiny_model):
    """encode([]) gives an empty (0, d) matrix (numpy and torch)."""
    assert tiny_model.encode([]).shape == (0, tiny_model.embedding_dim)
    assert tiny_model.encode([], convert_to_numpy=False).shape == (0, tiny_model.embedding_dim)


def test_single_string_gives_a_vector(tiny_model):
    """A single string gives a 1-D vector; a one-element list a (1, d) matrix."""
    assert tiny_model.encode("A man is eating food.").shape == (tiny_model.embedding_dim,)
    assert tiny_model.encode(["A man is eating food."]).shape == (1, tiny_model.embedding_dim)


@pytest.mark.parametrize(("texts", "index"), [("", 0), (["ok", ""], 1), (["ok", "   "], 1)])
def test_empty_texts_are_rejected(tiny_model, texts, index):
    """Empty or blank texts raise a ValueError naming the offending index."""
    with pytest.raises(ValueError, match=rf"texts\[{index}\]"):
        tiny_model.encode(texts)


def test_non_string_texts_are_rejected(tiny_model):
    """A non-string element raises TypeError naming its index; a non-sequence raises TypeError."""
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tiny_model.encode(["ok", 3])
    with pytest.raises(TypeError, match="int"):
        tiny_model.encode(123)
    with pytest.raises(TypeError):
        tiny_model.encode(None)


def test_bad_encode_arguments(tiny_model):
    """batch_size < 1 and an unknown prompt_type are rejected."""
    with pytest.raises(ValueError, match="batch_size"):
        tiny_model.encode(["ok"], batch_size=0)
    with pytest.raises(ValueError, match="prompt_type"):
        tiny_model.encode(["ok"], prompt_type="passage")


def test_instruction_longer_than_p_context(tiny_model):
    """An instruction that does not fit P's 128 positions raises a ValueError mentioning the context."""
    with pytest.raises(ValueError, match="context"):
        tiny_model.encode(["ok"], instruction="word " * 200)


def test_encode_restores_training_mode(tiny_model_dir):
    """encode runs in eval mode but hands the model back in the mode it found it in."""
    model = build(tiny_model_dir).train()
    model.encode(["ok"], instruction=INSTRUCTION)
    assert model.training and model.generator.training


@pytest.mark.parametrize(("field", "value"), [("num_soft_tokens", -1), ("tau", 0), ("tau", -1.0),
                                              ("pooling", "max"), ("prompt_on", "document"),
                                              ("prompting_trainable", "partial"), ("alignment_init", "pca")])
def test_bad_config_values(tiny_model_dir, field, value):
    """Invalid config values raise ValueError naming the field, in the config and in the constructor."""
    with pytest.raises(ValueError, match=field):
        PromptEmbedderConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        build(tiny_model_dir, **{field: value})


def test_unknown_config_key(tiny_model_dir):
    """A misspelt keyword is rejected rather than ignored."""
    with pytest.raises(ValueError, match="num_soft_token"):
        build(tiny_model_dir, num_soft_token=3)
