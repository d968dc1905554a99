"""PromptEmbedder save/load on tiny models: round trips, what is written, missing models, moving a trained P to a
new backbone."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from model_helpers import INSTRUCTION, QUERIES, TEXTS, build, relative_difference, train_steps
from safetensors.torch import load_file

from promptembedder import PromptEmbedder
from promptembedder.hub.model_card import README
from promptembedder.hub.registry import ModelNotAvailableError
from promptembedder.hub.serialization import MANIFEST_FILE
from promptembedder.models.config import CONFIG_NAME
from promptembedder.models.prompt_embedder import ADAPTER_DIR, ALIGNMENT_FILE, PROMPTING_FILE

# --- save / load --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_save_and_reload_round_trip(tiny_model_dir, tmp_path, mode):
    """After training, save_pretrained + from_pretrained reproduces the embeddings to 1e-6; a model rebuilt from
    the references alone does not (so the trained weights really are saved). Only the trainable state is
    written: config, W, and P's weights or adapter; never E's weights."""
    torch.manual_seed(0)
    model = train_steps(build(tiny_model_dir, prompting_trainable=mode))
    before = model.encode(TEXTS, instruction=INSTRUCTION)
    model.save_pretrained(tmp_path)

    loaded = PromptEmbedder.from_pretrained(tmp_path, device="cpu")
    assert loaded.config == model.config
    assert loaded.alignment.init_method == "loaded"
    assert not loaded.training
    after = loaded.encode(TEXTS, instruction=INSTRUCTION)
    np.testing.assert_allclose(after, before, atol=1e-6)
    with torch.no_grad():
        prompt = model.soft_prompt(INSTRUCTION)
        assert relative_difference(loaded.soft_prompt(INSTRUCTION), prompt) < 1e-5
    assert loaded.decode_prompt(INSTRUCTION) == model.decode_prompt(INSTRUCTION)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}

    # Meaningful: the references alone rebuild a clearly different prompt (and embeddings, though tiny random
    # E reacts only weakly to its prompt: measured max difference ~5e-5, vs < 1e-6 after the round trip).
    untrained = build(tiny_model_dir, prompting_trainable=mode).eval()
    with torch.no_grad():
        assert relative_difference(untrained.soft_prompt(INSTRUCTION), prompt) > 0.1
    assert np.abs(untrained.encode(TEXTS, instruction=INSTRUCTION) - before).max() > 1e-5

    names = {p.name for p in tmp_path.iterdir()}
    p_file = ADAPTER_DIR if mode == "lora" else PROMPTING_FILE
    assert names == {CONFIG_NAME, ALIGNMENT_FILE, p_file, README, MANIFEST_FILE}  # the model card; the manifest
    assert json.loads((tmp_path / CONFIG_NAME).read_text())["prompting_trainable"] == mode
    e_keys = set(model.backbone.model.state_dict())
    saved = list(tmp_path.rglob("*.safetensors"))
    for path in saved:
        assert not set(load_file(path)) & e_keys, path
    if mode == "full":
        p_state = load_file(tmp_path / PROMPTING_FILE)
        assert set(p_state) <= set(model.generator.model.state_dict())
        assert "model.embed_tokens.weight" not in p_state  # frozen: rebuilt from the reference
    else:
        assert all("lora_" in k for k in load_file(next((tmp_path / ADAPTER_DIR).glob("*.safetensors"))))


def test_bare_backbone_round_trip(tiny_model_dir, tmp_path):
    """num_soft_tokens=0 saves only the config and reloads to the same embeddings."""
    model = build(tiny_model_dir, num_soft_tokens=0).eval()
    model.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {CONFIG_NAME, README, MANIFEST_FILE}
    loaded = PromptEmbedder.from_pretrained(tmp_path, device="cpu")
    assert loaded.generator is None
    np.testing.assert_allclose(loaded.encode(TEXTS), model.encode(TEXTS), atol=1e-6)


def test_tied_embeddings_round_trip_when_training_p_embeddings(tiny_model_dir, tmp_path):
    """P with tied input/output embeddings (tiny gemma3, like Gemma 3 270M) and train_prompting_embeddings=True
    must save and reload to the same embeddings."""
    torch.manual_seed(0)
    model = train_steps(build(tiny_model_dir, p="gemma3", train_prompting_embeddings=True))
    before = model.encode(TEXTS, instruction=INSTRUCTION)
    model.save_pretrained(tmp_path)
    loaded = PromptEmbedder.from_pretrained(tmp_path, device="cpu")
    np.testing.assert_allclose(loaded.encode(TEXTS, instruction=INSTRUCTION), before, atol=1e-6)


def test_round_trip_when_training_p_embeddings(tiny_model_dir, tmp_path):
    """train_prompting_embeddings=True (untied llama P): the trained embedding matrix is saved and restored."""
    torch.manual_seed(0)
    model = train_steps(build(tiny_model_dir, train_prompting_embeddings=True))
    assert model.generator.embedding_matrix.requires_grad
    before = model.encode(TEXTS, instruction=INSTRUCTION)
    model.save_pretrained(tmp_path)
    assert "model.embed_tokens.weight" in load_file(tmp_path / PROMPTING_FILE)
    loaded = PromptEmbedder.from_pretrained(tmp_path, device="cpu")
    assert torch.equal(loaded.generator.embedding_matrix, model.generator.embedding_matrix)
    np.testing.assert_allclose(loaded.encode(TEXTS, instruction=INSTRUCTION), before, atol=1e-6)


def test_tied_embeddings_round_trip_with_frozen_p_embeddings(tiny_model_dir, tmp_path):
    """Tied P embeddings (tiny gemma3) with the default frozen embeddings save and reload exactly."""
    torch.manual_seed(0)
    model = train_steps(build(tiny_model_dir, p="gemma3"))
    before = model.encode(TEXTS, instruction=INSTRUCTION)
    model.save_pretrained(tmp_path)
    loaded = PromptEmbedder.from_pretrained(tmp_path, device="cpu")
    np.testing.assert_allclose(loaded.encode(TEXTS, instruction=INSTRUCTION), before, atol=1e-6)


@pytest.mark.parametrize("field", ["prompting_model", "embedding_model"])
def test_loading_with_a_missing_model_raises_a_clear_error(tiny_model_dir, tmp_path, field):
    """A saved folder whose P or E reference no longer exists raises ModelNotAvailableError naming it."""
    kind = "llama" if field == "prompting_model" else "bert"
    copy = tmp_path / f"copy-of-{kind}"
    shutil.copytree(tiny_model_dir(kind), copy)
    kwargs = {"prompting_model": str(tiny_model_dir("llama")), "embedding_model": str(tiny_model_dir("bert"))}
    kwargs[field] = str(copy)
    model = PromptEmbedder(device="cpu", **kwargs)
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    shutil.rmtree(copy)
    with pytest.raises(ModelNotAvailableError, match="not available") as info:
        PromptEmbedder.from_pretrained(saved, device="cpu")
    assert str(copy) in str(info.value)
    assert isinstance(info.value, OSError)


def test_loading_a_folder_without_config(tmp_path):
    """from_pretrained on a folder that is not a saved PromptEmbedder raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        PromptEmbedder.from_pretrained(tmp_path, device="cpu")


def test_for_new_backbone_keeps_trained_p_frozen(tiny_model_dir, tmp_path):
    """Transfer: the saved trained P is reloaded and frozen; W is freshly lstsq-fit for the new E."""
    torch.manual_seed(0)
    model = train_steps(build(tiny_model_dir))
    model.save_pretrained(tmp_path)
    assert model.config.prompt_position == "prefix"  # E was an encoder
    moved = PromptEmbedder.for_new_backbone(tmp_path, str(tiny_model_dir("llama")), device="cpu")
    assert moved.config.pooling == "last" and moved.config.prompt_position == "suffix"  # chosen afresh for the new E
    kept = PromptEmbedder.for_new_backbone(tmp_path, str(tiny_model_dir("llama")), prompt_position="prefix",
                                           device="cpu")
    assert kept.config.prompt_position == "prefix"
    assert moved.alignment.init_method.startswith("lstsq")
    assert [n for n, p in moved.named_parameters() if p.requires_grad] == ["alignment.linear.weight"]
    trained = model.generator.model.state_dict()
    for key, value in moved.generator.model.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_a_p_trained_through_lora_transfers_merged_and_reloads(tiny_model_dir, tmp_path):
    """A LoRA-adapted P moves to a new E with its adapter merged: the same prompts from P, frozen, and the
    transferred model saves and reloads as a fully trained P."""
    torch.manual_seed(0)
    model = train_steps(build(tiny_model_dir, prompting_trainable="lora"))
    model.save_pretrained(tmp_path / "source")
    moved = PromptEmbedder.for_new_backbone(tmp_path / "source", str(tiny_model_dir("llama")), device="cpu")
    assert moved.config.prompting_trainable == "full"
    assert [n for n, p in moved.named_parameters() if p.requires_grad] == ["alignment.linear.weight"]
    instruction = "find paraphrases"
    torch.testing.assert_close(moved.generator(instruction).embeddings, model.generator(instruction).embeddings,
                               atol=1e-5, rtol=1e-5)
    moved.save_pretrained(tmp_path / "moved")
    again = PromptEmbedder.from_pretrained(tmp_path / "moved", device="cpu")
    torch.testing.assert_close(torch.as_tensor(again.encode(QUERIES, instruction=instruction)),
                               torch.as_tensor(moved.encode(QUERIES, instruction=instruction)), atol=1e-5, rtol=1e-5)


def test_peft_deprecation_warnings_are_not_shown(tiny_model_dir, tmp_path):
    """peft reads transformers' deprecated `is_gradient_checkpointing`: a FutureWarning users cannot act on, so
    building, saving, reloading and transferring a LoRA-adapted P shows none."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build(tiny_model_dir, prompting_trainable="lora").save_pretrained(tmp_path)
        PromptEmbedder.from_pretrained(tmp_path, device="cpu")
        PromptEmbedder.for_new_backbone(tmp_path, str(tiny_model_dir("llama")), device="cpu")
    assert not [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)]
