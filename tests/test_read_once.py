"""Read once: with a suffix prompt on a causal E pooled at its last token, E reads the text once without a graph and
only the prompt positions with one. Embeddings and gradients must be the full forward's (every position with a
graph, right-padded: the reference), on every decoder kind, whatever the tokenizer's padding side, with texts of
different lengths in one batch (some longer than the tiny Gemma 3's 16-token sliding window), in a training step
plain and under GradCache; several prompts for one text read one cache."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch
from tiny_models import CORPUS
from tokenizers import processors
from transformers import AutoModel, AutoTokenizer

from promptembedder import PromptEmbedder
from promptembedder.data.datasets import TrainExample
from promptembedder.models.activation_checkpointing import enable_gradient_checkpointing
from promptembedder.models.backbone import EmbeddingBackbone
from promptembedder.models.baselines import BackboneEmbedder
from promptembedder.models.config import BaselineConfig
from promptembedder.training import Trainer, TrainingConfig
from promptembedder.training.grad_cache import CachedContrastiveLoss
from promptembedder.training.losses import ContrastiveLoss

pytestmark = pytest.mark.usefixtures("one_thread")

#: Four lengths in one batch: 7 to 42 tokens with the tiny tokenizers; two are longer than Gemma 3's window.
TEXTS = [CORPUS[0], " ".join(CORPUS[1:5]), " ".join(CORPUS[5:7]), " ".join(CORPUS[7:9])]
K = 3
INSTRUCTIONS = ["Retrieve semantically similar text.", "Classify the topic of the text.", None]


def make_backbone(tiny_model_dir, kind: str, trailing_eos: bool = False) -> EmbeddingBackbone:
    path = tiny_model_dir(kind)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if trailing_eos:  # as tokenizers that close every text with EOS (Qwen3-Embedding's)
        tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A <eos>", special_tokens=[("<bos>", 1), ("<eos>", 2)])
    return EmbeddingBackbone(AutoModel.from_pretrained(path), tokenizer, prompt_position="suffix")


class ReadOnceCalls:
    """Counts the read-once path's calls on one backbone, so a test knows which path ran."""

    def __init__(self, backbone: EmbeddingBackbone):
        self.count, original = 0, backbone._read_once

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        backbone._read_once = counted


def embed_and_grad(backbone: EmbeddingBackbone, prompt: torch.Tensor, read_once: bool, padding_side: str = "right"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised embeddings and the gradient on the prompt of a fixed random projection of them."""
    backbone.read_once, backbone.tokenizer.padding_side = read_once, padding_side
    prompt.grad = None
    embeddings = backbone(TEXTS, prompt, normalize=False)
    (embeddings * torch.linspace(-1, 1, embeddings.numel()).view_as(embeddings)).sum().backward()
    backbone.tokenizer.padding_side = "right"
    return embeddings.detach(), prompt.grad.clone()


def assert_same(fast: tuple[torch.Tensor, torch.Tensor], full: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert full[1].norm() > 0  # there is a gradient to compare
    torch.testing.assert_close(fast[0], full[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast[1], full[1], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3", "gpt2"])
def test_read_once_gives_the_full_forwards_embeddings_and_gradients(tiny_model_dir, kind, padding_side):
    backbone = make_backbone(tiny_model_dir, kind)
    lengths = backbone.tokenize(TEXTS, K)["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) == len(TEXTS) and lengths.max() > 16  # ragged, beyond Gemma 3's window
    prompt = (torch.randn(K, backbone.hidden_size, generator=torch.Generator().manual_seed(0))).requires_grad_()
    calls = ReadOnceCalls(backbone)
    fast = embed_and_grad(backbone, prompt, read_once=True, padding_side=padding_side)
    assert calls.count == 1
    full = embed_and_grad(backbone, prompt, read_once=False)
    assert calls.count == 1  # the switch turns it off
    assert_same(fast, full)


def test_a_trailing_special_token_is_read_after_the_prompt(tiny_model_dir):
    """A tokenizer that appends EOS: the prompt goes before it, and the pooled state is EOS's, in both paths."""
    backbone = make_backbone(tiny_model_dir, "gemma3", trailing_eos=True)
    assert backbone.suffix_special
    prompt = torch.randn(K, backbone.hidden_size, generator=torch.Generator().manual_seed(1)).requires_grad_()
    calls = ReadOnceCalls(backbone)
    assert_same(embed_and_grad(backbone, prompt, read_once=True), embed_and_grad(backbone, prompt, read_once=False))
    assert calls.count == 1


@pytest.mark.parametrize(("kind", "trailing_eos"), [("gemma3", True), ("gpt2", False)])
def test_several_prompts_read_one_text_cache(tiny_model_dir, kind, trailing_eos):
    """M prompts for the same texts: E reads the texts once (two forwards in all, not 2M), and each prompt's
    embeddings are its own full forward's."""
    backbone = make_backbone(tiny_model_dir, kind, trailing_eos)
    generator = torch.Generator().manual_seed(2)
    prompts = [torch.randn(K, backbone.hidden_size, generator=generator) for _ in range(3)]
    forwards = []
    backbone.model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    with torch.inference_mode():
        together = backbone.embed_prompts(TEXTS, prompts)
        assert len(forwards) == 2
        backbone.read_once = False
        apart = torch.stack([backbone(TEXTS, prompt) for prompt in prompts])
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-4)


def test_the_full_forward_runs_where_reading_once_would_be_wrong(tiny_model_dir):
    """A prefix (the text attends to it), a trainable E (its text positions need a graph), a checkpointed E (the
    recompute would extend the cache again) and a prompt without gradient (nothing to save) take the full path."""
    backbone = make_backbone(tiny_model_dir, "llama")
    calls = ReadOnceCalls(backbone)
    prompt = torch.randn(K, backbone.hidden_size).requires_grad_()
    backbone(TEXTS, prompt.detach())
    backbone.prompt_position = "prefix"
    backbone(TEXTS, prompt)
    backbone.prompt_position = "suffix"
    backbone.model.norm.weight.requires_grad_(True)
    backbone(TEXTS, prompt)
    backbone.model.norm.weight.requires_grad_(False)
    enable_gradient_checkpointing(backbone.model)
    backbone(TEXTS, prompt)
    assert calls.count == 0


def test_encode_with_several_instructions_returns_one_matrix_each(tiny_model_dir):
    """`encode(texts, instruction=[...])`: (M, n, d), each matrix the one a separate encode gives, in input order
    across batches; documents without a prompt are the same under every instruction; a bad list is refused."""
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("gemma3")),
                           device="cpu")
    assert model.backbone.prompt_position == "suffix"
    calls = ReadOnceCalls(model.backbone)
    texts = list(CORPUS[:10])
    together = model.encode(texts, instruction=INSTRUCTIONS, batch_size=4)
    assert together.shape == (3, 10, model.embedding_dim) and calls.count == 3  # one per batch of 4
    for matrix, instruction in zip(together, INSTRUCTIONS, strict=True):
        np.testing.assert_allclose(matrix, model.encode(texts, instruction=instruction, batch_size=4), atol=1e-5)
    assert model.encode(texts[0], instruction=INSTRUCTIONS).shape == (3, model.embedding_dim)
    documents = model.encode(texts[:3], instruction=INSTRUCTIONS[:2], prompt_type="document")
    if model.config.prompt_on == "query":
        np.testing.assert_array_equal(documents[0], documents[1])
    with pytest.raises(TypeError, match=r"instruction\[1\]"):
        model.encode(texts, instruction=["a", 3])
    with pytest.raises(TypeError, match="non-empty"):
        model.encode(texts, instruction=[])


def triplets() -> list[TrainExample]:
    return [TrainExample(" ".join(CORPUS[i : i + 1 + i % 4]), CORPUS[i + 1], (" ".join(CORPUS[i + 2 : i + 5]),),
                         "Retrieve semantically similar text.") for i in range(8)]


def step_gradients(trainer: Trainer, read_once: bool, cached: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """One batch's loss and the gradient of every trainable parameter (P and W), plain or GradCache."""
    trainer.model.backbone.read_once = read_once
    trainer.model.train()
    trainer.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same Gumbel noise for every path
    plain = ContrastiveLoss(**{f.name: getattr(trainer.loss, f.name) for f in fields(ContrastiveLoss)})
    value = (trainer.loss if cached else plain)(triplets())
    value.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.optimizer.zero_grad(set_to_none=True)
    return value.item(), grads


@pytest.mark.parametrize(("prompt_on", "cached", "prompt_diversity"), [
    ("query", False, 0.0), ("both", False, 0.0), ("both", True, 0.0), ("query", True, 0.5)])
def test_a_training_step_has_the_full_forwards_gradients(tiny_model_dir, tmp_path, prompt_on, cached,
                                                         prompt_diversity):
    """P and W get the gradients of the full forward, with documents prompted too (`both`), under GradCache
    (chunks of 3) and with the prompt-diversity term; `read_once=False` in the run's config reaches E."""
    config = TrainingConfig(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("gemma3")),
                            output_dir=str(tmp_path / "run"), batch_size=8, do_eval=False, device="cpu",
                            prompt_on=prompt_on, grad_cache_chunk_size=3, prompt_diversity=prompt_diversity,
                            read_once=False)
    other = TrainExample(CORPUS[20], CORPUS[21], (), "Classify the topic of the text.")
    trainer = Trainer(config, examples=[*triplets(), other])
    assert isinstance(trainer.loss, CachedContrastiveLoss) and not trainer.model.backbone.read_once
    calls = ReadOnceCalls(trainer.model.backbone)
    full_loss, full = step_gradients(trainer, read_once=False, cached=False)
    assert calls.count == 0
    fast_loss, fast = step_gradients(trainer, read_once=True, cached=cached)
    assert calls.count > 0
    assert fast_loss == pytest.approx(full_loss, rel=1e-5)
    assert fast.keys() == full.keys() and any(g.abs().max() > 0 for g in full.values())
    for name, grad in full.items():
        torch.testing.assert_close(fast[name], grad, atol=1e-6, rtol=1e-3, msg=name)


def test_a_baseline_encodes_several_instructions_one_by_one(tiny_model_dir):
    """A model that cannot read a text once for several instructions (the instruction as text) still gives one
    matrix per instruction, each its own encode's."""
    model = BackboneEmbedder(BaselineConfig("hard-text", str(tiny_model_dir("bert")), prompt_on="query"), device="cpu")
    together = model.encode(TEXTS, instruction=INSTRUCTIONS[:2])
    assert together.shape == (2, len(TEXTS), model.embedding_dim)
    for matrix, instruction in zip(together, INSTRUCTIONS[:2], strict=True):
        np.testing.assert_allclose(matrix, model.encode(TEXTS, instruction=instruction), atol=1e-6)
    assert not np.allclose(together[0], together[1], atol=1e-4)  # the instruction reached the texts
