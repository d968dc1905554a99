"""Checks that the tiny offline models load back through the Auto classes and run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import tiny_models
import torch
from tiny_models import DECODER_KINDS, KINDS, build_tokenizer, make_tiny_model
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

TinyDir = Callable[[str], Path]
SENTENCE = "a man is eating food"


@pytest.mark.parametrize("kind", KINDS)
def test_loads_and_runs_with_inputs_embeds(kind: str, tiny_model_dir: TinyDir) -> None:
    path = tiny_model_dir(kind)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.model_max_length == 128
    auto_cls = AutoModelForCausalLM if kind in DECODER_KINDS else AutoModel
    model = auto_cls.from_pretrained(path).eval()
    assert model.config.vocab_size == len(tokenizer)

    enc = tokenizer(SENTENCE, return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    if kind == "bert":
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.convert_ids_to_tokens(ids)[1:-1] == SENTENCE.split()
    elif kind in ("llama", "llama-embed", "gemma3"):
        assert ids[0] == tokenizer.bos_token_id == model.config.bos_token_id
        assert tokenizer.convert_ids_to_tokens(ids)[1:] == ["▁" + w for w in SENTENCE.split()]
    else:  # qwen2, gpt2: byte-level, no bos prepended
        assert tokenizer.convert_ids_to_tokens(ids)[1:] == ["Ġ" + w for w in SENTENCE.split()[1:]]
        assert tokenizer.bos_token_id is None or ids[0] != tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == SENTENCE

    embeds = model.get_input_embeddings()(enc["input_ids"])
    with torch.no_grad():
        out = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"])
    if kind in DECODER_KINDS:
        assert out.logits.shape == (1, len(ids), len(tokenizer))
    else:
        assert out.last_hidden_state.shape == (1, len(ids), model.config.hidden_size)


def test_special_tokens_match_config(tiny_model_dir: TinyDir) -> None:
    for kind in ("llama", "qwen2", "gemma3"):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir(kind))
        config = json.loads((tiny_model_dir(kind) / "config.json").read_text())
        assert tokenizer.eos_token == "<eos>" and config["eos_token_id"] == tokenizer.eos_token_id
        assert tokenizer.pad_token == "<pad>" and config["pad_token_id"] == tokenizer.pad_token_id
        assert config["bos_token_id"] == tokenizer.bos_token_id
    gpt2 = AutoTokenizer.from_pretrained(tiny_model_dir("gpt2"))
    assert gpt2.pad_token is None and gpt2.eos_token == gpt2.bos_token == "<|endoftext|>"
    assert AutoTokenizer.from_pretrained(tiny_model_dir("qwen2")).bos_token is None
    bert = AutoTokenizer.from_pretrained(tiny_model_dir("bert"))
    assert bert.pad_token == "[PAD]" and bert.mask_token == "[MASK]"
    assert any(t.startswith("##") for t in bert.get_vocab())


@pytest.mark.parametrize("kind", ["llama", "llama-embed"])
def test_llama_loads_as_base_model_and_pads(kind: str, tiny_model_dir: TinyDir) -> None:
    path = tiny_model_dir(kind)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    enc = tokenizer(["retrieve passages that answer the question", "a horse"], padding=True, return_tensors="pt")
    with torch.no_grad():
        embeds = model.get_input_embeddings()(enc["input_ids"])
        out = model(inputs_embeds=embeds, attention_mask=enc["attention_mask"])
    assert out.last_hidden_state.shape == (2, enc["input_ids"].shape[1], model.config.hidden_size)


def test_vocabularies_share_surface_forms() -> None:
    bpe = set(build_tokenizer("llama").get_vocab())
    wordpiece = set(build_tokenizer("bert").get_vocab())
    shared = {t for t in wordpiece if "▁" + t in bpe}
    assert {"man", "eating", "food", "horse", "music"} <= shared
    assert len(shared) > 50


def test_deterministic(tmp_path: Path) -> None:
    first = make_tiny_model("gemma3", tmp_path / "a", seed=3)
    second = make_tiny_model("gemma3", tmp_path / "b", seed=3)
    assert (first / "tokenizer.json").read_text() == (second / "tokenizer.json").read_text()
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()


@pytest.mark.parametrize(
    "train",
    [
        tiny_models._train_metaspace_bpe,
        tiny_models._train_qwen2_bpe,
        tiny_models._train_byte_level_bpe,
        tiny_models._train_wordpiece,
    ],
)
def test_tokenizer_training_is_deterministic(train: Callable[[], object]) -> None:
    assert train().to_str() == train().to_str()
