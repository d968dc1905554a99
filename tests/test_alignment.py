"""The alignment W from P's embedding space to E's: shared-vocabulary matching and the least-squares init."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from promptembedder import PromptEmbedder
from promptembedder.models.alignment import MIN_SHARED_TOKENS, Alignment, shared_token_ids


def build(tiny_model_dir, p="llama", e="bert", **kwargs):
    return PromptEmbedder(prompting_model=str(tiny_model_dir(p)), embedding_model=str(tiny_model_dir(e)),
                          device="cpu", **kwargs)


def surface(token):
    """A tokenizer-independent form: word starts get a leading space, continuations none, lower-cased."""
    if token.startswith("##"):
        return token[2:].lower()
    if token[0] in "▁Ġ":
        return " " + token[1:].lower()
    return token.lower()


@torch.no_grad()
def mapped_vs_target(model):
    """W applied to P's embeddings of the shared tokens, and E's embeddings of the same tokens."""
    ids_p, ids_e = shared_token_ids(model.generator.tokenizer, model.backbone.tokenizer)
    source = model.generator.embedding_matrix[ids_p]
    target = model.backbone.model.get_input_embeddings()(torch.tensor(ids_e))
    return model.alignment(source), target, ids_p


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3", "gpt2"])
def test_shared_tokens_have_the_same_surface_form(tiny_model_dir, kind):
    """Each (P id, E id) pair names the same word piece: '▁man'/'Ġman' <-> 'man', 'ing' <-> '##ing'."""
    tok_p = AutoTokenizer.from_pretrained(tiny_model_dir(kind))
    tok_e = AutoTokenizer.from_pretrained(tiny_model_dir("bert"))
    ids_p, ids_e = shared_token_ids(tok_p, tok_e)
    assert len(ids_p) == len(ids_e) >= MIN_SHARED_TOKENS
    assert len(set(ids_p)) == len(ids_p) and len(set(ids_e)) == len(ids_e)
    pairs = dict(zip(ids_p, ids_e, strict=True))
    for id_p, id_e in pairs.items():
        token_p, token_e = tok_p.convert_ids_to_tokens(id_p), tok_e.convert_ids_to_tokens(id_e)
        assert surface(token_p) == surface(token_e if token_e.startswith("##") else "▁" + token_e)
    marker = "▁" if kind in ("llama", "gemma3") else "Ġ"
    man = tok_p.convert_tokens_to_ids(marker + "man")
    assert tok_e.convert_ids_to_tokens(pairs[man]) == "man"
    assert not set(ids_e) & set(tok_e.all_special_ids)
    assert not set(ids_p) & set(tok_p.all_special_ids)


def test_identical_tokenizers_share_every_normal_token(tiny_model_dir):
    """P and E with the same tokenizer: every non-special word piece is shared, with equal ids on both sides."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir("llama"))
    ids_p, ids_e = shared_token_ids(tok, tok)
    assert ids_p == ids_e
    words = {i for token, i in tok.get_vocab().items() if any(c.isalnum() for c in token)}
    assert words - set(tok.all_special_ids) <= set(ids_p)
    assert len(ids_p) >= len(tok) - len(tok.all_special_ids) - 2  # only bare markers ('▁', '#') may be left out


def test_llama_to_bert_uses_least_squares(tiny_model_dir):
    """Tiny llama and bert share hundreds of tokens, so the default (auto) init is lstsq."""
    model = build(tiny_model_dir)
    assert model.alignment.init_method.startswith("lstsq")
    shared = len(shared_token_ids(model.generator.tokenizer, model.backbone.tokenizer)[0])
    assert str(shared) in model.alignment.init_method
    assert build(tiny_model_dir, alignment_init="lstsq").alignment.init_method.startswith("lstsq")


def test_random_init_when_asked(tiny_model_dir):
    """alignment_init='random' skips the fit: init_method 'random', weights ~N(0, 1/d_P)."""
    model = build(tiny_model_dir, alignment_init="random")
    assert model.alignment.init_method == "random"
    weight = model.alignment.linear.weight
    assert weight.shape == (model.backbone.hidden_size, model.generator.hidden_size)
    assert weight.std().item() == pytest.approx(1 / model.generator.hidden_size, rel=0.2)


def test_least_squares_maps_shared_tokens_closer_than_random(tiny_model_dir):
    """lstsq W puts P's embedding of a shared token nearer E's embedding of it than a random W does:
    on average (distance and cosine), for almost every token, and for the token 'horse' itself."""
    lstsq = build(tiny_model_dir)
    torch.manual_seed(0)
    random = build(tiny_model_dir, alignment_init="random")
    mapped_l, target, ids_p = mapped_vs_target(lstsq)
    mapped_r, _, _ = mapped_vs_target(random)
    dist_l, dist_r = (mapped_l - target).norm(dim=1), (mapped_r - target).norm(dim=1)
    cos_l, cos_r = torch.cosine_similarity(mapped_l, target), torch.cosine_similarity(mapped_r, target)
    assert dist_l.mean() < 0.95 * dist_r.mean()
    assert cos_l.mean() > cos_r.mean() + 0.2  # measured 0.40 vs 0.00
    assert (cos_l > cos_r).float().mean() > 0.9
    horse = ids_p.index(lstsq.generator.tokenizer.convert_tokens_to_ids("▁horse"))
    assert cos_l[horse] > cos_r[horse] and dist_l[horse] < dist_r[horse]


def test_fit_least_squares_recovers_a_linear_map():
    """With targets exactly A @ x, the ridge-regularised fit recovers A (up to the small ridge bias)."""
    gen = torch.Generator().manual_seed(0)
    true_map = torch.randn(6, 4, generator=gen)
    source = torch.randn(300, 4, generator=gen)
    alignment = Alignment(4, 6)
    alignment.fit_least_squares(source, source @ true_map.T)
    torch.testing.assert_close(alignment.linear.weight, true_map, atol=1e-2, rtol=1e-2)
    assert alignment.init_method == "lstsq on 300 shared tokens"


class StubTokenizer:
    """Just enough of a tokenizer for shared_token_ids: a vocabulary and no special tokens."""

    all_special_tokens: list[str] = []

    def __init__(self, words):
        self.vocab = {word: i for i, word in enumerate(words)}

    def get_vocab(self):
        return dict(self.vocab)


def test_too_few_shared_tokens():
    """Below MIN_SHARED_TOKENS shared tokens, 'auto' falls back to random and 'lstsq' raises."""
    few = [f"▁w{i}" for i in range(MIN_SHARED_TOKENS - 1)]
    tok_p, tok_e = StubTokenizer(few), StubTokenizer(few + ["▁extra"])
    embed_e = torch.nn.Embedding(len(few) + 1, 6)
    embeddings_p = torch.randn(len(few), 4)
    alignment = Alignment(4, 6)
    before = alignment.linear.weight.clone()
    assert alignment.init_from_vocabularies(tok_p, embeddings_p, tok_e, embed_e, "auto") == "random"
    assert torch.equal(alignment.linear.weight, before)
    with pytest.raises(ValueError, match="shared tokens"):
        alignment.init_from_vocabularies(tok_p, embeddings_p, tok_e, embed_e, "lstsq")
    many = [f"▁w{i}" for i in range(MIN_SHARED_TOKENS)]
    result = alignment.init_from_vocabularies(StubTokenizer(many), torch.randn(len(many), 4), StubTokenizer(many),
                                              torch.nn.Embedding(len(many), 6), "auto")
    assert result == f"lstsq on {MIN_SHARED_TOKENS} shared tokens"


def test_alignment_maps_widths_and_casts_dtype():
    """W maps (K, d_P) to (K, d_E), casting the input to its own dtype."""
    alignment = Alignment(4, 6)
    out = alignment(torch.randn(3, 4, dtype=torch.float64))
    assert out.shape == (3, 6) and out.dtype == torch.float32
