"""Pooling and the frozen Embedding LLM E: where the soft prompt is inserted, masks, and what is pooled."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from promptembedder.models.backbone import EmbeddingBackbone, is_decoder
from promptembedder.models.pooling import pool

TEXTS = ["a man is eating a piece of bread", "a dog", "the quick brown fox jumps"]
K = 3


def make_backbone(tiny_model_dir, kind, **kwargs):
    path = tiny_model_dir(kind)
    return EmbeddingBackbone(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), **kwargs)


def hand_hidden(batch=2, length=5, dim=3):
    """States whose value encodes (row, position), so a pooled vector says where it came from."""
    rows = torch.arange(batch, dtype=torch.float32)[:, None, None] * 100
    positions = torch.arange(length, dtype=torch.float32)[None, :, None]
    return (rows + positions).expand(batch, length, dim).clone()


# --- pool ------------------------------------------------------------------------------------------------


def test_last_pooling_right_padding():
    """`last` picks each row's last real token when pads are on the right."""
    hidden = hand_hidden()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert pool(hidden, mask, "last")[:, 0].tolist() == [2.0, 104.0]


def test_last_pooling_left_padding():
    """`last` picks the final position when pads are on the left (also for a row that is mostly pad)."""
    hidden = hand_hidden(batch=3)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert pool(hidden, mask, "last")[:, 0].tolist() == [4.0, 104.0, 204.0]


def test_last_pooling_single_real_token_and_mask_dtypes():
    """`last` works for a one-token row and for bool/float masks alike."""
    hidden = hand_hidden()
    mask = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    for m in (mask, mask.bool(), mask.float()):
        assert pool(hidden, m, "last")[:, 0].tolist() == [0.0, 103.0]


def test_mean_pooling_excludes_pads_and_excluded_positions():
    """`mean` averages only positions that are real and not in exclude_mask (the soft prompt)."""
    hidden = hand_hidden()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert pool(hidden, mask, "mean")[:, 0].tolist() == [1.0, 102.0]
    exclude = torch.tensor([[0, 1, 0, 0, 0], [0, 1, 1, 0, 0]])
    assert pool(hidden, mask, "mean", exclude)[:, 0].tolist() == [1.0, pytest.approx(100 + 7 / 3)]
    left_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    left_exclude = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    assert pool(hidden, left_mask, "mean", left_exclude)[:, 0].tolist() == [2.0, 102.0]


def test_cls_pooling_takes_position_zero():
    """`cls` takes position 0 regardless of the mask."""
    hidden = hand_hidden()
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])


def test_unknown_pooling_raises():
    with pytest.raises(ValueError, match="max"):
        pool(hand_hidden(), torch.ones(2, 5), "max")


# --- insert_prompt ---------------------------------------------------------------------------------------


def check_insertion(backbone, texts, prompt, expected_offset):
    """Insert `prompt` into tokenised `texts` and check, row by row, that it sits at first real token + offset."""
    batch = backbone.tokenize(texts)
    embeds = backbone.model.get_input_embeddings()(batch["input_ids"]).detach()
    mask = batch["attention_mask"]
    new_embeds, new_mask, in_prompt = backbone.insert_prompt(embeds, mask, prompt)
    batch_size, length, dim = embeds.shape
    assert new_embeds.shape == (batch_size, length + K, dim)
    assert new_mask.shape == in_prompt.shape == (batch_size, length + K)
    prompts = prompt.expand(batch_size, K, dim)
    for row in range(batch_size):
        at = int(mask[row].nonzero()[0]) + expected_offset
        assert torch.equal(new_embeds[row, :at], embeds[row, :at])
        assert torch.equal(new_embeds[row, at : at + K], prompts[row])
        assert torch.equal(new_embeds[row, at + K :], embeds[row, at:])
        ones = torch.ones(K, dtype=mask.dtype)
        assert torch.equal(new_mask[row], torch.cat([mask[row, :at], ones, mask[row, at:]]))
        assert in_prompt[row].nonzero().flatten().tolist() == list(range(at, at + K))
    assert int(new_mask.sum()) == int(mask.sum()) + batch_size * K
    return batch, new_embeds, new_mask


@pytest.mark.parametrize(("kind", "offset"), [("bert", 1), ("llama", 1), ("qwen2", 0), ("gpt2", 0)])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_insert_prompt_position(tiny_model_dir, kind, offset, padding_side):
    """The prompt goes right after [CLS] (bert) / BOS (llama), or at the very start without BOS (qwen2, gpt2),
    for right- and left-padded batches; the mask grows by K and marks the prompt slots as real."""
    backbone = make_backbone(tiny_model_dir, kind)
    assert backbone.tokenizer.padding_side == "right"
    assert backbone.prefix_special == bool(offset)
    backbone.tokenizer.padding_side = padding_side
    prompt = 100 + torch.randn(K, backbone.hidden_size)
    batch, new_embeds, _ = check_insertion(backbone, TEXTS, prompt, offset)
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # the batch really is padded
    if padding_side == "left":
        assert batch["attention_mask"][:, 0].min() == 0
    if kind == "bert":  # position 0 of every row (after left pads) still holds [CLS]
        first = batch["attention_mask"].argmax(1)
        assert (batch["input_ids"][torch.arange(len(TEXTS)), first] == backbone.tokenizer.cls_token_id).all()


def test_insert_prompt_accepts_a_prompt_per_row(tiny_model_dir):
    """A (B, K, d) prompt puts a different prompt into each row."""
    backbone = make_backbone(tiny_model_dir, "bert")
    prompts = 100 + torch.randn(len(TEXTS), K, backbone.hidden_size)
    check_insertion(backbone, TEXTS, prompts, 1)


def test_default_pooling_by_architecture(tiny_model_dir):
    """Encoders pool the mean by default and decoders the last token; an explicit choice wins."""
    bert, llama = make_backbone(tiny_model_dir, "bert"), make_backbone(tiny_model_dir, "llama")
    assert not is_decoder(bert.model) and bert.pooling == "mean"
    assert is_decoder(llama.model) and llama.pooling == "last"
    assert make_backbone(tiny_model_dir, "bert", pooling="cls").pooling == "cls"


def test_backbone_is_frozen_and_in_eval(tiny_model_dir):
    """E's weights never require grad and dropout is off."""
    backbone = make_backbone(tiny_model_dir, "bert")
    assert not any(p.requires_grad for p in backbone.model.parameters())
    assert not backbone.model.training


def test_gpt2_tokenizer_gets_a_pad_token(tiny_model_dir):
    """A tokenizer without a pad token (gpt2) pads with EOS, so batches of different lengths work."""
    backbone = make_backbone(tiny_model_dir, "gpt2")
    assert backbone.tokenizer.pad_token == backbone.tokenizer.eos_token
    assert backbone(TEXTS).shape == (len(TEXTS), backbone.hidden_size)


def hand_forward(backbone, texts, prompt):
    """E's last hidden states on [text with prompt inserted], plus the new mask and prompt mask."""
    batch = backbone.tokenize(texts, K)
    embeds = backbone.model.get_input_embeddings()(batch["input_ids"])
    embeds, mask, in_prompt = backbone.insert_prompt(embeds, mask=batch["attention_mask"], prompt=prompt)
    extra = {"token_type_ids": torch.zeros_like(mask)} if "token_type_ids" in batch else {}
    hidden = backbone.model(inputs_embeds=embeds, attention_mask=mask, **extra).last_hidden_state
    return hidden, mask, in_prompt


@torch.no_grad()
def test_mean_pooling_excludes_the_prompt_by_default(tiny_model_dir):
    """forward's mean pooling averages the text tokens only; include_prompt_in_mean=True adds the prompt slots."""
    backbone = make_backbone(tiny_model_dir, "bert")
    prompt = torch.randn(K, backbone.hidden_size)
    hidden, mask, in_prompt = hand_forward(backbone, TEXTS, prompt)
    text_only = (mask * (1 - in_prompt)).unsqueeze(-1).float()
    expected = (hidden * text_only).sum(1) / text_only.sum(1)
    torch.testing.assert_close(backbone(TEXTS, prompt, normalize=False), expected, atol=1e-5, rtol=1e-5)
    with_prompt = mask.unsqueeze(-1).float()
    expected_all = (hidden * with_prompt).sum(1) / with_prompt.sum(1)
    included = backbone(TEXTS, prompt, normalize=False, include_prompt_in_mean=True)
    torch.testing.assert_close(included, expected_all, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(included, expected, atol=1e-3)


@torch.no_grad()
def test_last_pooling_with_prompt_takes_the_last_text_token(tiny_model_dir):
    """Decoder E: with the prompt inserted and right padding, `last` is the hidden state of the last text token."""
    backbone = make_backbone(tiny_model_dir, "llama")
    prompt = torch.randn(K, backbone.hidden_size)
    hidden, mask, _ = hand_forward(backbone, TEXTS, prompt)
    last = mask.sum(1) - 1
    expected = hidden[torch.arange(len(TEXTS)), last]
    torch.testing.assert_close(backbone(TEXTS, prompt, normalize=False), expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_prompt_changes_the_embedding_and_output_is_normalized(tiny_model_dir):
    """The prompt actually reaches E (output differs from no prompt); normalize=True gives unit rows."""
    backbone = make_backbone(tiny_model_dir, "bert")
    prompt = torch.randn(K, backbone.hidden_size)
    with_prompt, without = backbone(TEXTS, prompt), backbone(TEXTS)
    torch.testing.assert_close(with_prompt.norm(dim=-1), torch.ones(len(TEXTS)))
    assert not torch.allclose(with_prompt, without, atol=1e-3)


def test_gradient_flows_through_frozen_e_into_the_prompt(tiny_model_dir):
    """E is frozen, but the prompt (an input) receives a gradient through it."""
    backbone = make_backbone(tiny_model_dir, "bert")
    prompt = torch.randn(K, backbone.hidden_size, requires_grad=True)
    backbone(TEXTS, prompt).sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.model.parameters())


def test_long_text_leaves_room_for_the_prompt(tiny_model_dir):
    """Texts are truncated to max_length - K, so [prompt ; text] still fits E's 128 positions."""
    backbone = make_backbone(tiny_model_dir, "bert")
    long_text = "man " * 400
    batch = backbone.tokenize([long_text], K)
    assert batch["input_ids"].shape[1] == 128 - K
    assert backbone([long_text], torch.randn(K, backbone.hidden_size)).shape == (1, backbone.hidden_size)
