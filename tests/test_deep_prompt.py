"""Deep prompts (prompt_position='deep'): the prompt as a prefix of every layer's keys and values in a decoder E."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from promptembedder import PromptEmbedder
from promptembedder.auto import baseline_from_pretrained
from promptembedder.data.datasets import TrainExample
from promptembedder.export.exporter import export
from promptembedder.models.backbone import EmbeddingBackbone
from promptembedder.models.baselines import PROMPT_FILE, PromptTuningEmbedder
from promptembedder.models.deep_prompt import DeepPrompt, static_offsets
from promptembedder.models.prompt_embedder import ALIGNMENT_FILE, LAYER_OFFSETS
from promptembedder.training import Trainer, TrainingConfig

TEXTS = ["a man is eating a piece of bread", "a dog", "the quick brown fox jumps over the lazy dog"]
K = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def backbones(tiny_model_dir, kind: str) -> tuple[EmbeddingBackbone, EmbeddingBackbone]:
    """The same tiny E with a prefix and with a deep prompt."""
    path = tiny_model_dir(kind)
    model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    return (EmbeddingBackbone(model, tokenizer, prompt_position="prefix"),
            EmbeddingBackbone(model, tokenizer, prompt_position="deep"))


@pytest.mark.parametrize("kind", ["llama", "gemma3", "qwen2", "gpt2"])
def test_an_untrained_deep_prompt_embeds_exactly_as_the_same_prefix(tiny_model_dir, kind):
    """Zero offsets: E reads [BOS] prompt text either way, so last-token embeddings agree (with and without BOS)."""
    prefix, deep = backbones(tiny_model_dir, kind)
    prompt = torch.randn(K, prefix.hidden_size) * 0.05
    zero = static_offsets(K, deep.kv_layout)
    assert zero.shape == (deep.kv_layout.layers, 2, K, deep.kv_layout.size)
    torch.testing.assert_close(deep(TEXTS, DeepPrompt(prompt, zero)), prefix(TEXTS, prompt), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_offsets_steer_every_layer_and_only_they_and_the_prompt_get_gradients(tiny_model_dir, kind):
    """Back-propagates a random projection of the embeddings: their plain sum is constant behind a final LayerNorm
    with unit gain (GPT-2's ln_f), so its gradient is rounding noise, zero or not by chance."""
    prefix, deep = backbones(tiny_model_dir, kind)
    generator = torch.Generator().manual_seed(0)
    prompt = (torch.randn(K, prefix.hidden_size, generator=generator) * 0.05).requires_grad_()
    offsets = torch.randn(deep.kv_layout.layers, 2, K, deep.kv_layout.size, generator=generator, requires_grad=True)
    steered = deep(TEXTS, DeepPrompt(prompt, offsets))
    assert (steered - prefix(TEXTS, prompt.detach())).abs().max() > 1e-3
    (steered * torch.randn(steered.shape, generator=generator)).sum().backward()
    assert offsets.grad.abs().sum(dim=(1, 2, 3)).gt(0).all(), "every layer's offsets must get a gradient"
    assert prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in deep.model.parameters())


def test_a_deep_embedding_does_not_depend_on_the_rest_of_the_batch(tiny_model_dir):
    """Padding and the shared prefix: each text alone embeds as it does in a batch of different lengths."""
    _, deep = backbones(tiny_model_dir, "gemma3")
    prompt = DeepPrompt(torch.randn(K, deep.hidden_size) * 0.05,
                        torch.randn(deep.kv_layout.layers, 2, K, deep.kv_layout.size))
    batch = deep(TEXTS, prompt)
    for i, text in enumerate(TEXTS):
        torch.testing.assert_close(deep([text], prompt)[0], batch[i], atol=1e-5, rtol=1e-5)


def test_deep_needs_a_decoder_and_a_deep_prompt(tiny_model_dir):
    path = tiny_model_dir("bert")
    with pytest.raises(ValueError, match="deep.*decoder"):
        EmbeddingBackbone(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), prompt_position="deep")
    with pytest.raises(ValueError, match="gradient_checkpointing with prompt_position 'deep'"):
        TrainingConfig(prompt_position="deep", gradient_checkpointing=True)
    prefix, deep = backbones(tiny_model_dir, "llama")
    with pytest.raises(ValueError, match="prompt position must be prefix, suffix or both"):
        deep(TEXTS, torch.zeros(K, deep.hidden_size))
    with pytest.raises(ValueError, match="needs prompt_position 'deep'"):
        prefix(TEXTS, DeepPrompt(torch.zeros(K, deep.hidden_size), static_offsets(K, deep.kv_layout)))


def test_promptembedder_deep_trains_its_offsets_saves_and_reloads(tiny_model_dir, tmp_path):
    """P -> W -> per-layer offsets: trained with W's rate, saved beside W, reloaded to the same embeddings."""
    config = TrainingConfig(method="promptembedder", prompting_model=str(tiny_model_dir("llama")),
                            embedding_model=str(tiny_model_dir("gemma3")), prompt_position="deep",
                            output_dir=str(tmp_path / "run"), device="cpu", show_progress_bar=False, max_steps=3,
                            batch_size=4, learning_rate=1e-3, alignment_learning_rate=1e-2, warmup_ratio=0.0,
                            eval_steps=1000, save_steps=1000, seed=0, do_eval=False)
    examples = [TrainExample(t, t.upper(), instruction="find paraphrases") for t in TEXTS + ["two dogs", "a cat"]]
    trainer = Trainer(config, examples=examples)
    model = trainer.model
    offsets = model.alignment.layer_offsets.weight
    assert offsets.abs().sum() == 0
    groups = model.param_groups(1e-2)
    assert any(p is offsets for p in groups[0]["params"]) and groups[0]["lr"] == 1e-2
    e_before = {n: p.clone() for n, p in model.backbone.model.named_parameters()}
    trainer.train()
    assert offsets.abs().sum() > 0
    assert all(torch.equal(p, e_before[n]) for n, p in model.backbone.model.named_parameters())
    final = tmp_path / "run" / "final"
    assert load_file(final / ALIGNMENT_FILE)[LAYER_OFFSETS].shape == offsets.shape
    model.eval()
    reloaded = PromptEmbedder.from_pretrained(final, device="cpu")
    assert reloaded.config.prompt_position == "deep"
    torch.testing.assert_close(torch.as_tensor(reloaded.encode(TEXTS, instruction="find paraphrases")),
                               torch.as_tensor(model.encode(TEXTS, instruction="find paraphrases")),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="'deep'.*prefix"):
        export(final, tmp_path / "exported", {"sts": "find paraphrases"})
    transferred = PromptEmbedder.for_new_backbone(final, str(tiny_model_dir("qwen2")), prompt_position="deep",
                                                  device="cpu")
    assert transferred.alignment.layer_offsets.weight.abs().sum() == 0  # E's maps start afresh
    assert transferred.num_trainable_parameters() == sum(p.numel() for p in transferred.alignment.parameters())


def test_static_deep_prompt_tuning_saves_its_offsets(tiny_model_dir, tmp_path):
    """Prompt tuning at `deep` is P-tuning v2: a static prompt plus free offsets at every layer."""
    from promptembedder.models.config import BaselineConfig

    model = PromptTuningEmbedder(BaselineConfig(method="prompt-tuning", embedding_model=str(tiny_model_dir("llama")),
                                                num_soft_tokens=K, prompt_position="deep"), device="cpu")
    bare = model.embed(TEXTS).detach()
    with torch.no_grad():
        model.offsets.normal_()
    steered = model.embed(TEXTS).detach()
    assert (steered - bare).abs().max() > 1e-3
    model.save_pretrained(tmp_path)
    assert set(load_file(tmp_path / PROMPT_FILE)) == {"prompt", "offsets"}
    torch.testing.assert_close(baseline_from_pretrained(tmp_path, device="cpu").embed(TEXTS), steered)
