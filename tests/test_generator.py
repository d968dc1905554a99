"""The Prompting LLM P as a differentiable soft-prompt generator: Gumbel relaxation, modes, instruction ids."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from promptembedder.models.generator import PromptGenerator, SoftPrompt, relax

INSTRUCTION = "Retrieve passages that answer the question."
K = 4


def make_generator(tiny_model_dir, kind="llama", num_soft_tokens=K, **kwargs):
    path = tiny_model_dir(kind)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.get_input_embeddings().requires_grad_(False)
    return PromptGenerator(model, AutoTokenizer.from_pretrained(path), num_soft_tokens, **kwargs)


def random_logits(seed=0, shape=(3, 50)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


# --- relax ----------------------------------------------------------------------------------------------


def test_relax_deterministic_soft_is_tempered_softmax():
    """Without noise and hard=False, relax is exactly softmax(logits / tau)."""
    logits = random_logits()
    for tau in (0.5, 1.0, 3.0):
        torch.testing.assert_close(relax(logits, tau, hard=False, stochastic=False), F.softmax(logits / tau, -1))


def test_relax_deterministic_hard_is_argmax_one_hot():
    """Without noise and hard=True, relax is the one-hot of the argmax (same dtype as the logits)."""
    logits = random_logits()
    out = relax(logits, 1.0, hard=True, stochastic=False)
    assert out.dtype == logits.dtype
    assert torch.equal(out, F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype))


def test_relax_stochastic_soft_is_a_random_distribution():
    """Gumbel-softmax: rows are strictly positive distributions, different from call to call."""
    logits = random_logits()
    torch.manual_seed(0)
    first = relax(logits, 1.0, hard=False, stochastic=True)
    second = relax(logits, 1.0, hard=False, stochastic=True)
    assert (first > 0).all()
    torch.testing.assert_close(first.sum(-1), torch.ones(3))
    assert not torch.allclose(first, second)


def test_relax_stochastic_hard_is_one_hot_with_straight_through_gradient():
    """Hard Gumbel-softmax gives exact one-hot rows, yet logits still receive a (straight-through) gradient."""
    logits = random_logits().requires_grad_(True)
    torch.manual_seed(0)
    out = relax(logits, 1.0, hard=True, stochastic=True)
    assert set(out.detach().unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out.detach().sum(-1), torch.ones(3))
    (out * torch.randn(out.shape)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_relax_temperature_limits():
    """A huge tau flattens the distribution to uniform; a tiny tau sharpens it to the argmax."""
    logits = random_logits()
    uniform = torch.full_like(logits, 1 / logits.shape[-1])
    torch.testing.assert_close(relax(logits, 1e6, hard=False, stochastic=False), uniform, atol=1e-6, rtol=0)
    torch.manual_seed(0)
    torch.testing.assert_close(relax(logits, 1e6, hard=False, stochastic=True), uniform, atol=1e-5, rtol=0)
    sharp = relax(logits, 1e-3, hard=False, stochastic=False)
    torch.testing.assert_close(sharp, relax(logits, 1.0, hard=True, stochastic=False))


# --- the generator ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3", "gpt2"])
def test_generates_k_soft_tokens_in_p_space(tiny_model_dir, kind):
    """forward returns K soft tokens of width d_P with K token ids; decode gives a string."""
    generator = make_generator(tiny_model_dir, kind).eval()
    prompt = generator(INSTRUCTION)
    assert isinstance(prompt, SoftPrompt)
    assert prompt.embeddings.shape == (K, generator.hidden_size)
    assert len(prompt.token_ids) == K
    assert all(0 <= i < generator.embedding_matrix.shape[0] for i in prompt.token_ids)
    assert isinstance(generator.decode(prompt.token_ids), str)


def test_eval_mode_is_deterministic(tiny_model_dir):
    """In eval mode there is no Gumbel noise: two generations are identical (soft and hard)."""
    for hard in (False, True):
        generator = make_generator(tiny_model_dir, hard=hard).eval()
        first, second = generator(INSTRUCTION), generator(INSTRUCTION)
        assert torch.equal(first.embeddings, second.embeddings)
        assert first.token_ids == second.token_ids


def test_train_mode_is_stochastic(tiny_model_dir):
    """In train mode (hard=False) the Gumbel noise makes two generations differ."""
    generator = make_generator(tiny_model_dir, hard=False).train()
    torch.manual_seed(0)
    first, second = generator(INSTRUCTION), generator(INSTRUCTION)
    assert not torch.allclose(first.embeddings, second.embeddings)


def test_without_gumbel_noise_training_generates_as_inference_and_trains_p(tiny_model_dir):
    """gumbel_noise=False: train-mode tokens are eval's (no draw), and P still gets a gradient through them."""
    generator = make_generator(tiny_model_dir, gumbel_noise=False)
    expected = generator.eval()(INSTRUCTION).embeddings
    generator.train()
    torch.manual_seed(0)
    first, second = generator(INSTRUCTION), generator(INSTRUCTION)
    torch.testing.assert_close(first.embeddings, expected)
    assert torch.equal(first.embeddings, second.embeddings)
    first.embeddings.square().sum().backward()
    grads = [p.grad for p in generator.model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_eval_soft_tokens_are_the_softmax_mixture_of_embedding_rows(tiny_model_dir):
    """The first soft token is softmax(logits / tau) @ E_P, with logits from P on the instruction."""
    generator = make_generator(tiny_model_dir, tau=2.0).eval()
    with torch.no_grad():
        logits = generator.model(input_ids=generator.instruction_ids(INSTRUCTION)).logits[0, -1]
        expected = F.softmax(logits / 2.0, -1) @ generator.embedding_matrix
        prompt = generator(INSTRUCTION)
    torch.testing.assert_close(prompt.embeddings[0], expected, atol=1e-6, rtol=1e-5)
    assert prompt.token_ids[0] == int(logits.argmax())


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_hard_train_tokens_are_exact_embedding_rows_with_gradient(tiny_model_dir, kind):
    """hard=True in training: each soft token is exactly a row of P's embedding matrix (the one named by
    token_ids), and the straight-through estimator still gives every trainable weight of P a gradient."""
    generator = make_generator(tiny_model_dir, kind, hard=True).train()
    torch.manual_seed(0)
    prompt = generator(INSTRUCTION)
    rows = generator.embedding_matrix[prompt.token_ids]
    assert torch.equal(prompt.embeddings.detach(), rows.detach())
    (prompt.embeddings * torch.randn(prompt.embeddings.shape)).sum().backward()
    trainable = [(n, p) for n, p in generator.model.named_parameters() if p.requires_grad]
    assert trainable
    for name, param in trainable:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@torch.no_grad()
@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3", "gpt2"])
def test_hard_eval_generation_is_greedy_decoding(tiny_model_dir, kind):
    """hard=True in eval feeds back exact embedding rows (scaled like P's embedding layer, e.g. Gemma's sqrt(d)),
    so through the KV cache it must reproduce plain greedy decoding from token ids."""
    generator = make_generator(tiny_model_dir, kind, hard=True).eval()
    ids = generator.instruction_ids(INSTRUCTION)
    greedy = []
    for _ in range(K):
        next_id = generator.model(input_ids=ids).logits[0, -1].argmax()
        greedy.append(int(next_id))
        ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    prompt = generator(INSTRUCTION)
    assert prompt.token_ids == greedy
    assert torch.equal(prompt.embeddings, generator.embedding_matrix[greedy])


def test_huge_tau_gives_the_mean_embedding_row(tiny_model_dir):
    """hard=False, tau=1e4: the relaxed distribution is ~uniform, so each soft token is ~the mean row of E_P.

    Measured deviation ~1e-6 (rows have norm ~0.16, the mean row ~0.008); at tau=1 it is orders larger.
    """
    generator = make_generator(tiny_model_dir, tau=1e4).train()
    mean_row = generator.embedding_matrix.mean(0)
    torch.manual_seed(0)
    with torch.no_grad():
        deviation = (generator(INSTRUCTION).embeddings - mean_row).norm(dim=-1).max()
        assert deviation < 1e-5
        generator.tau = 1.0
        assert (generator(INSTRUCTION).embeddings - mean_row).norm(dim=-1).max() > 100 * deviation


def test_instruction_ids_start_from_bos_once(tiny_model_dir):
    """With a BOS tokenizer the ids start with exactly one BOS, also for the empty instruction."""
    generator = make_generator(tiny_model_dir, "llama")
    bos = generator.tokenizer.bos_token_id
    ids = generator.instruction_ids(INSTRUCTION)[0].tolist()
    assert ids[0] == bos and ids.count(bos) == 1
    assert generator.instruction_ids("")[0].tolist() == [bos]


@pytest.mark.parametrize("kind", ["qwen2", "gpt2"])
def test_instruction_ids_without_tokenizer_bos(tiny_model_dir, kind):
    """Tokenizers that prepend nothing: qwen2 (no BOS at all) is used as is and an empty instruction starts
    from EOS; gpt2 (BOS defined but never prepended) gets its BOS prepended."""
    generator = make_generator(tiny_model_dir, kind)
    tokenizer = generator.tokenizer
    ids = generator.instruction_ids(INSTRUCTION)[0].tolist()
    start = tokenizer.bos_token_id
    prefix = [] if start is None else [start]
    assert ids == prefix + tokenizer(INSTRUCTION)["input_ids"]
    assert generator.instruction_ids("")[0].tolist() == (prefix or [tokenizer.eos_token_id])
    assert generator(" ").embeddings.shape == (K, generator.hidden_size)


def test_instruction_longer_than_context_is_rejected(tiny_model_dir):
    """An instruction that, with the K soft tokens, overflows P's 128 positions raises a clear ValueError."""
    generator = make_generator(tiny_model_dir)
    assert generator.context_length == 128
    with pytest.raises(ValueError, match="context"):
        generator("word " * 200)
    fits = " ".join(["man"] * (128 - K - 1))
    assert len(generator.instruction_ids(fits)[0]) == 128 - K


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3", "gpt2"])
def test_batched_generation_gives_each_instructions_own_prompt(tiny_model_dir, kind):
    """Instructions of different lengths, left-padded into one batch: in eval mode each gets the prompt that
    generating it alone gives (the padding is masked, positions start at each instruction's first token)."""
    generator = make_generator(tiny_model_dir, kind, tau=0.5).eval()
    texts = [INSTRUCTION, "Classify it.", "Find a question that is a duplicate of the given question, please."]
    batched = generator.generate(texts)
    for text, prompt in zip(texts, batched, strict=True):
        alone = generator(text)
        torch.testing.assert_close(prompt.embeddings, alone.embeddings, atol=1e-5, rtol=1e-4)
        assert prompt.token_ids == alone.token_ids
    assert not torch.allclose(batched[0].embeddings, batched[1].embeddings, atol=1e-4, rtol=0)  # a real check


def test_batched_generation_is_differentiable(tiny_model_dir):
    generator = make_generator(tiny_model_dir).train()
    torch.manual_seed(0)
    first, second = generator.generate([INSTRUCTION, "Classify it."])
    (first.embeddings.sum() - second.embeddings.sum()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.model.parameters())
