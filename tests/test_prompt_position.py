"""Where the soft prompt goes in E's input (prefix, suffix, both): positions, masks, pooling, configs."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from promptembedder import PromptEmbedder
from promptembedder.models.backbone import EmbeddingBackbone
from promptembedder.models.baselines import PROMPTEOL_TEMPLATE, BackboneEmbedder, PromptTuningEmbedder
from promptembedder.models.config import CONFIG_NAME, BaselineConfig, PromptEmbedderConfig
from promptembedder.training import TrainingConfig, build_model

TEXTS = ["a man is eating a piece of bread", "a dog", "the quick brown fox jumps"]
K = 3


def make_backbone(tiny_model_dir, kind, **kwargs):
    path = tiny_model_dir(kind)
    return EmbeddingBackbone(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), **kwargs)


def inserted(backbone, prompt, padding_side):
    backbone.tokenizer.padding_side = padding_side
    batch = backbone.tokenize(TEXTS, K)
    embeds = backbone.model.get_input_embeddings()(batch["input_ids"]).detach()
    return batch, embeds, *backbone.insert_prompt(embeds, batch["attention_mask"], prompt)


def expected_row(embeds, mask, prompt, at):
    """One row with the prompt spliced in at `at`, and its mask."""
    ones = torch.ones(K, dtype=mask.dtype)
    return torch.cat([embeds[:at], prompt, embeds[at:]]), torch.cat([mask[:at], ones, mask[at:]])


@pytest.mark.parametrize(("kind", "trailing"), [("bert", 1), ("llama", 0), ("qwen2", 0), ("gpt2", 0)])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_suffix_goes_after_the_text_and_before_a_trailing_special_token(tiny_model_dir, kind, trailing, padding_side):
    """A suffix sits right after each row's last text token: before [SEP] (bert), at the end otherwise;
    right and left padding alike; the prompt slots are real in the mask and marked."""
    backbone = make_backbone(tiny_model_dir, kind, prompt_position="suffix")
    assert backbone.suffix_special == bool(trailing)
    prompt = 100 + torch.randn(K, backbone.hidden_size)
    batch, embeds, new_embeds, new_mask, marks = inserted(backbone, prompt, padding_side)
    mask = batch["attention_mask"]
    assert mask.sum(1).min() < mask.sum(1).max()  # really padded
    for row in range(len(TEXTS)):
        at = int(mask[row].nonzero()[-1]) + 1 - trailing
        row_embeds, row_mask = expected_row(embeds[row], mask[row], prompt, at)
        assert torch.equal(new_embeds[row], row_embeds)
        assert torch.equal(new_mask[row], row_mask)
        assert marks[row].nonzero().flatten().tolist() == list(range(at, at + K))
        if trailing:  # [SEP] still closes the row, right after the prompt
            assert batch["input_ids"][row, at] == backbone.tokenizer.sep_token_id


@pytest.mark.parametrize("kind", ["bert", "llama"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_both_puts_the_same_prompt_before_and_after_the_text(tiny_model_dir, kind, padding_side):
    """`both`: one copy after BOS/[CLS], one after the text; 2K marked slots; texts leave room for 2K."""
    backbone = make_backbone(tiny_model_dir, kind, prompt_position="both")
    prompt = 100 + torch.randn(K, backbone.hidden_size)
    batch, embeds, new_embeds, new_mask, marks = inserted(backbone, prompt, padding_side)
    mask = batch["attention_mask"]
    trailing = int(backbone.suffix_special)
    for row in range(len(TEXTS)):
        real = mask[row].nonzero().flatten()
        suffix_at, prefix_at = int(real[-1]) + 1 - trailing, int(real[0]) + 1  # both kinds add BOS/[CLS]
        row_embeds, row_mask = expected_row(embeds[row], mask[row], prompt, suffix_at)
        row_embeds, row_mask = expected_row(row_embeds, row_mask, prompt, prefix_at)
        assert torch.equal(new_embeds[row], row_embeds) and torch.equal(new_mask[row], row_mask)
        shifted = suffix_at + K
        assert marks[row].nonzero().flatten().tolist() == [*range(prefix_at, prefix_at + K),
                                                           *range(shifted, shifted + K)]
    assert backbone.tokenize(["man " * 400], K)["input_ids"].shape[1] == 128 - 2 * K


@torch.no_grad()
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_last_pooling_with_a_suffix_pools_the_last_soft_token(tiny_model_dir, padding_side):
    """Decoder E without a trailing special token: `last` is the state of the last soft token."""
    backbone = make_backbone(tiny_model_dir, "llama", prompt_position="suffix")
    prompt = torch.randn(K, backbone.hidden_size)
    _, _, embeds, mask, marks = inserted(backbone, prompt, padding_side)
    hidden = backbone.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    last_prompt = (marks * torch.arange(marks.shape[1])).argmax(1)
    expected = hidden[torch.arange(len(TEXTS)), last_prompt]
    torch.testing.assert_close(backbone(TEXTS, prompt, normalize=False), expected, atol=1e-5, rtol=1e-5)
    other = backbone(TEXTS, torch.randn(K, backbone.hidden_size), normalize=False)
    assert not torch.allclose(other, expected, atol=1e-3)  # the pooled state depends on the prompt


@torch.no_grad()
@pytest.mark.parametrize("position", ["suffix", "both"])
def test_mean_pooling_leaves_out_every_prompt_slot(tiny_model_dir, position):
    """Encoder E: mean pooling averages the text tokens only, wherever the prompt copies are."""
    backbone = make_backbone(tiny_model_dir, "bert", prompt_position=position)
    prompt = torch.randn(K, backbone.hidden_size)
    _, _, embeds, mask, marks = inserted(backbone, prompt, "right")
    hidden = backbone.model(inputs_embeds=embeds, attention_mask=mask,
                            token_type_ids=torch.zeros_like(mask)).last_hidden_state
    text = (mask * (1 - marks)).unsqueeze(-1).float()
    expected = (hidden * text).sum(1) / text.sum(1)
    torch.testing.assert_close(backbone(TEXTS, prompt, normalize=False), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(expected, backbone(TEXTS, normalize=False), atol=1e-3)  # the suffix reaches the text


def test_a_suffix_that_mean_pooling_cannot_see_is_refused(tiny_model_dir):
    """Causal decoder + mean pooling + suffix: no text token attends to the suffix, so it is an error."""
    with pytest.raises(ValueError, match="suffix.*mean pooling"):
        make_backbone(tiny_model_dir, "llama", pooling="mean", prompt_position="suffix")
    with pytest.raises(ValueError, match="prompt_position"):
        make_backbone(tiny_model_dir, "llama", prompt_position="middle")


def test_promptembedder_with_a_suffix_caches_saves_and_reloads(tiny_model_dir, tmp_path):
    """The position flows config -> backbone, survives save/load, and the encode prompt cache still works."""
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("qwen2")),
                           device="cpu", prompt_position="suffix")
    assert model.backbone.prompt_position == "suffix"
    first = model.encode(TEXTS, instruction="find similar")
    assert set(model._prompt_cache) == {"find similar"}
    torch.testing.assert_close(torch.as_tensor(model.encode(TEXTS, instruction="find similar")), torch.as_tensor(first))
    model.save_pretrained(tmp_path)
    again = PromptEmbedder.from_pretrained(tmp_path, device="cpu")
    assert again.config.prompt_position == "suffix"
    torch.testing.assert_close(torch.as_tensor(again.encode(TEXTS, instruction="find similar")),
                               torch.as_tensor(first), atol=1e-5, rtol=1e-5)


def test_configs_saved_before_prompt_positions_load_as_prefix(tmp_path):
    """An old promptembedder_config.json has no prompt_position: it was trained with a prefix."""
    data = PromptEmbedderConfig(prompt_position="suffix").to_dict()
    del data["prompt_position"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(data))
    assert PromptEmbedderConfig.load(tmp_path).prompt_position == "prefix"
    with pytest.raises(ValueError, match="prompt_position"):
        PromptEmbedderConfig(prompt_position="middle")


@pytest.mark.parametrize("position", ["prefix", "suffix", "both"])
def test_prompt_tuning_baseline_places_its_static_prompt(tiny_model_dir, position):
    """The trainer's prompt_position reaches the prompt-tuning baseline's backbone."""
    config = TrainingConfig(method="prompt-tuning", embedding_model=str(tiny_model_dir("llama")),
                            prompt_position=position, device="cpu")
    model = build_model(config, torch.device("cpu"))
    assert isinstance(model, PromptTuningEmbedder) and model.backbone.prompt_position == position
    assert model.embed(TEXTS).shape == (len(TEXTS), model.embedding_dim)


def test_prompteol_template_wraps_each_text(tiny_model_dir):
    """The hard-text baseline with PromptEOL's template embeds exactly the templated texts."""
    config = BaselineConfig(method="hard-text", embedding_model=str(tiny_model_dir("llama")),
                            template=PROMPTEOL_TEMPLATE)
    model = BackboneEmbedder(config, device="cpu")
    templated = [PROMPTEOL_TEMPLATE.replace("{text}", t) for t in TEXTS]
    torch.testing.assert_close(model.embed(TEXTS), model.backbone(templated))
    with pytest.raises(ValueError, match="text"):
        BaselineConfig(method="hard-text", embedding_model="x", template="no placeholder")


def test_auto_is_a_suffix_for_last_token_decoders_and_a_prefix_otherwise(tiny_model_dir, tmp_path):
    """`auto` resolves when E is loaded, and the resolved position is what a saved config records."""
    assert make_backbone(tiny_model_dir, "llama", prompt_position="auto").prompt_position == "suffix"
    assert make_backbone(tiny_model_dir, "llama", prompt_position="auto", pooling="mean").prompt_position == "prefix"
    assert make_backbone(tiny_model_dir, "bert", prompt_position="auto").prompt_position == "prefix"
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("gpt2")),
                           device="cpu", prompt_position="auto")
    model.save_pretrained(tmp_path)
    assert PromptEmbedderConfig.load(tmp_path).prompt_position == "suffix"


def test_the_default_is_auto_a_suffix_on_decoders_and_a_prefix_on_encoders(tiny_model_dir):
    """What won the regime ablation is the default: both models and the training settings start from `auto`."""
    from promptembedder.models.baselines import PromptTuningEmbedder
    from promptembedder.models.config import BaselineConfig
    from promptembedder.training import TrainingConfig

    assert PromptEmbedderConfig().prompt_position == TrainingConfig().prompt_position == "auto"
    p = str(tiny_model_dir("llama"))
    assert PromptEmbedder(prompting_model=p, embedding_model=str(tiny_model_dir("gemma3")),
                          device="cpu").config.prompt_position == "suffix"
    assert PromptEmbedder(prompting_model=p, embedding_model=str(tiny_model_dir("bert")),
                          device="cpu").config.prompt_position == "prefix"
    tuned = PromptTuningEmbedder(BaselineConfig(method="prompt-tuning", embedding_model=str(tiny_model_dir("gemma3"))),
                                 device="cpu")
    assert tuned.config.prompt_position == "suffix"


def test_train_command_checks_the_prompt_position_before_loading_models(tmp_path):
    """`promptembedder train --prompt-position middle` is a clear error (exit 2), not a traceback."""
    from typer.testing import CliRunner

    from promptembedder.cli import app

    result = CliRunner().invoke(app, ["train", "--prompt-position", "middle", "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "prompt_position must be one of" in result.output.replace("\n", " ")
