"""Training P for other backbones and instructions: transfer (a trained P, frozen, with a fresh W), a frozen
alignment, the per-instruction prompt summary and the prompt-diversity term."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainer_helpers import (
    INSTRUCTION,
    OTHER_INSTRUCTION,
    TinyDir,
    make_config,
    mixed_examples,
    paraphrase_examples,
)

from promptembedder.bench.demo import LORA_FROM_SCRATCH, W_ONLY, speedup
from promptembedder.models.config import PromptEmbedderConfig
from promptembedder.models.prompt_embedder import PromptEmbedder
from promptembedder.training import Trainer, TrainingConfig

pytestmark = pytest.mark.usefixtures("one_thread", "dev_pairs")


# ---------------------------------------------------------------------------------------------------
# Transfer: a trained P, frozen, with a fresh W for a new backbone
# ---------------------------------------------------------------------------------------------------


def test_transfer_trains_only_the_alignment(tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    llama, bert = tiny_model_dir("llama"), tiny_model_dir("bert")
    source = make_config(tmp_path, llama, bert, "source", max_steps=3)
    Trainer(source, examples=mixed_examples()).train()
    final_dir = Path(source.output_dir) / "final"
    trained_p = load_file(final_dir / "prompting_model.safetensors")

    config = make_config(tmp_path, llama, llama, "transfer", init_from=str(final_dir), max_steps=3)
    trainer = Trainer(config, examples=mixed_examples())
    model = trainer.model
    assert isinstance(model, PromptEmbedder) and model.backbone.pooling == "last"  # a decoder as E
    p_params = dict(model.generator.model.named_parameters())
    assert p_params and not any(p.requires_grad for p in p_params.values())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"alignment.linear.weight"}
    # P starts from the trained weights, not from the fresh tiny llama.
    fresh_p = PromptEmbedder(prompting_model=str(llama), embedding_model=str(llama), device="cpu").generator.model
    fresh_state, p_state = fresh_p.state_dict(), model.generator.model.state_dict()
    differs = False
    for name, value in trained_p.items():
        torch.testing.assert_close(p_state[name], value, atol=0, rtol=0)
        differs |= not torch.equal(fresh_state[name], value)
    assert differs, "the source run did not change P: the transfer check would be vacuous"

    p_before = {n: v.detach().clone() for n, v in model.generator.model.state_dict().items()}
    w_before = model.alignment.linear.weight.detach().clone()
    result = trainer.train()
    assert result.steps == 3
    for name, value in model.generator.model.state_dict().items():
        assert torch.equal(value, p_before[name]), f"frozen P changed: {name}"
    assert not torch.allclose(model.alignment.linear.weight, w_before)


def test_a_frozen_alignment_trains_p_alone_and_still_transfers(tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    """train_alignment=False: W stays at its least-squares start, P learns, the flag is saved, and a transfer of
    that P trains a fresh W (W alone)."""
    llama = tiny_model_dir("llama")
    config = make_config(tmp_path, llama, llama, "frozen_w", train_alignment=False, max_steps=3, save_model=True)
    trainer = Trainer(config, examples=mixed_examples())
    model = trainer.model
    w_start = model.alignment.linear.weight.detach().clone()
    assert model.alignment.init_method.startswith("lstsq")
    assert not any(p.requires_grad for p in model.alignment.parameters())
    p_before = {n: v.detach().clone() for n, v in model.generator.model.named_parameters() if v.requires_grad}
    result = trainer.train()
    assert torch.equal(model.alignment.linear.weight, w_start)
    assert any(not torch.equal(v, p_before[n]) for n, v in model.generator.model.named_parameters() if n in p_before)
    assert result.trainable_parameters == sum(v.numel() for v in p_before.values())  # W is not counted

    final_dir = Path(config.output_dir) / "final"
    reloaded = PromptEmbedder.from_pretrained(final_dir, device="cpu")
    assert reloaded.config.train_alignment is False
    assert "| Alignment (W) | frozen at its least-squares start |" in (final_dir / "README.md").read_text()
    torch.testing.assert_close(reloaded.alignment.linear.weight, w_start, atol=0, rtol=0)
    transfer = Trainer(make_config(tmp_path, llama, llama, "transfer", init_from=str(final_dir), max_steps=2),
                       examples=mixed_examples())
    assert {n for n, p in transfer.model.named_parameters() if p.requires_grad} == {"alignment.linear.weight"}


def test_the_summary_reports_each_instructions_prompt_and_warns_when_p_writes_one_for_all(
    tiny_model_dir: TinyDir, tmp_path: Path
) -> None:
    """train_summary.json decodes P's prompt per training instruction with their soft-token cosine; a P whose
    output rows are all equal writes one prompt for every instruction, and the run says so."""
    llama = tiny_model_dir("llama")
    config = make_config(tmp_path, llama, llama, "apart", max_steps=1)
    trainer = Trainer(config, examples=mixed_examples())
    with torch.no_grad():  # sharpen P's random distributions so that the two instructions' prompts differ
        trainer.model.generator.model.get_output_embeddings().weight.mul_(50.0)
    trainer.train()
    report = json.loads((Path(config.output_dir) / "train_summary.json").read_text())["instructions"]
    assert set(report["prompts"]) == {INSTRUCTION, OTHER_INSTRUCTION}
    assert report["prompt_cosine"]["min"] < 0.99
    assert report["prompt_cosine"]["min"] == report["prompt_cosine"]["mean"] == report["prompt_cosine"]["max"]  # 1 pair

    config = make_config(tmp_path, llama, llama, "collapsed", max_steps=1)
    trainer = Trainer(config, examples=mixed_examples())
    with torch.no_grad():  # every vocabulary row alike: the same distribution whatever the instruction
        head = trainer.model.generator.model.get_output_embeddings().weight
        head.copy_(head[:1].expand_as(head))
    with pytest.warns(UserWarning, match="same prompt for all 2 training instructions"):
        trainer.train()
    report = json.loads((Path(config.output_dir) / "train_summary.json").read_text())["instructions"]
    assert report["prompt_cosine"]["min"] > 0.999
    assert len(set(report["prompts"].values())) == 1


def test_prompt_diversity_pushes_ps_prompts_for_different_instructions_apart(
    tiny_model_dir: TinyDir, tmp_path: Path
) -> None:
    """The same three steps from the same start, with and without a (dominant) diversity term: with it, P's prompts
    for the two training instructions end up much less alike."""
    llama = tiny_model_dir("llama")
    cosines = {}
    for weight in (0.0, 100.0):
        config = make_config(tmp_path, llama, llama, f"diversity{weight}", max_steps=3, prompt_diversity=weight)
        trainer = Trainer(config, examples=mixed_examples())
        assert trainer.loss.instructions == (INSTRUCTION, OTHER_INSTRUCTION)
        with torch.no_grad():  # sharpen P's random distributions a little, so that the two prompts can differ
            trainer.model.generator.model.get_output_embeddings().weight.mul_(5.0)
        trainer.train()
        report = json.loads((Path(config.output_dir) / "train_summary.json").read_text())["instructions"]
        cosines[weight] = report["prompt_cosine"]["min"]
    assert cosines[100.0] < cosines[0.0] - 0.2, cosines


def test_prompt_diversity_is_refused_where_p_makes_no_prompts_or_cannot_change(
    tiny_model_dir: TinyDir, tmp_path: Path
) -> None:
    llama = tiny_model_dir("llama")
    with pytest.raises(ValueError, match="training data has one instruction"):
        Trainer(make_config(tmp_path, llama, llama, prompt_diversity=1.0), examples=paraphrase_examples())
    with pytest.raises(ValueError, match="prompt_diversity must be >= 0"):
        TrainingConfig(prompt_diversity=-1.0)
    with pytest.raises(ValueError, match="prompt_diversity.*'lora'"):
        TrainingConfig(method="lora", prompt_diversity=1.0)
    with pytest.raises(ValueError, match="prompt_diversity.*transfer"):
        TrainingConfig(init_from=str(tmp_path), prompt_diversity=1.0)


def test_a_frozen_alignment_is_refused_where_it_means_nothing(
    tiny_model_dir: TinyDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llama = str(tiny_model_dir("llama"))
    monkeypatch.setattr("promptembedder.models.alignment.MIN_SHARED_TOKENS", 10**9)  # too few shared tokens: W random
    with pytest.raises(ValueError, match="share too few tokens"):
        PromptEmbedder(prompting_model=llama, embedding_model=llama, train_alignment=False, device="cpu")
    with pytest.raises(ValueError, match="train_alignment=False.*'lora'"):
        TrainingConfig(method="lora", train_alignment=False)
    with pytest.raises(ValueError, match="train_alignment=False.*transfer"):
        TrainingConfig(init_from=str(tmp_path), train_alignment=False)
    with pytest.raises(ValueError, match="random map"):
        PromptEmbedderConfig(train_alignment=False, alignment_init="random")


@pytest.mark.parametrize(("lora", "moved", "value", "words"), [
    ((40, 80.0), (10, 20.0), 4.0, "4.00x LoRA's speed"),
    ((0, 0.0), (0, 0.0), None, "both met it at step 0, before any training"),
    ((4, 8.0), (0, 0.0), None, "the transfer met it at step 0, before any training"),
    ((0, 0.0), (3, 9.66), None, "LoRA met it at step 0, before any training; the transfer at step 3 (10 s)"),
    (None, (3, 9.66), None, "not reached by both runs"),
])
def test_the_transfer_speed_up_never_reads_a_ratio_with_a_zero(
        lora: tuple | None, moved: tuple, value: float | None, words: str) -> None:
    """The demo once printed "0.00x LoRA's speed" when LoRA from scratch met the target before training."""
    assert speedup({LORA_FROM_SCRATCH: lora, W_ONLY: moved}) == {"value": value, "words": words}
