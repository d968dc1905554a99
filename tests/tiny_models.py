"""Tiny, randomly initialised Hugging Face models with locally trained tokenizers, for offline tests.

``make_tiny_model(kind, directory)`` builds a model of the given kind plus a matching tokenizer trained
with the ``tokenizers`` library on a small built-in English corpus, saves both with ``save_pretrained``
and returns the directory, which can then be passed to ``AutoModel.from_pretrained``,
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``.  Nothing is downloaded.

Tokenizers per kind (all have ``model_max_length == 128``, right padding):

* ``llama`` / ``llama-embed`` / ``gemma3``: sentencepiece-like BPE with a metaspace pre-tokenizer (word
  starts are "▁man"), cased; specials ``<pad>``=0 ``<bos>``=1 ``<eos>``=2 ``<unk>``=3; ``<bos>`` is
  prepended by the post-processor.  Loads back as ``TokenizersBackend``.
* ``qwen2``: Qwen2-like byte-level BPE (word starts are "Ġman"; ``AutoTokenizer`` always rebuilds model_type
  qwen2 as ``Qwen2Tokenizer`` with this exact pipeline), same four specials and ids, but ``bos_token`` is
  None and nothing is prepended (like real Qwen2); eos ``<eos>``, pad ``<pad>``.
* ``gpt2``: GPT-2-like byte-level BPE ("Ġman"); ``<|endoftext|>``=0 is bos/eos/unk; no pad token; no bos.
* ``bert``: uncased WordPiece ("##ing" continuations); ``[PAD]``=0 ``[UNK]``=1 ``[CLS]``=2 ``[SEP]``=3
  ``[MASK]``=4; ``[CLS] ... [SEP]`` template; returns ``token_type_ids``.

Model configs use ``vocab_size == len(tokenizer)`` and the tokenizer's bos/eos/pad ids.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

__all__ = [
    "BPE_SPECIAL_TOKENS",
    "CORPUS",
    "DECODER_KINDS",
    "ENCODER_KINDS",
    "GPT2_SPECIAL_TOKEN",
    "KINDS",
    "WORDPIECE_SPECIAL_TOKENS",
    "build_tokenizer",
    "make_tiny_model",
]

#: Causal-LM kinds (loadable with ``AutoModelForCausalLM``; "llama"/"llama-embed" also with ``AutoModel``).
DECODER_KINDS: tuple[str, ...] = ("llama", "llama-embed", "qwen2", "gemma3", "gpt2")
#: Encoder kinds (loadable with ``AutoModel`` only).
ENCODER_KINDS: tuple[str, ...] = ("bert",)
KINDS: tuple[str, ...] = DECODER_KINDS + ENCODER_KINDS

#: Special tokens of the BPE tokenizers of llama, qwen2 and gemma3; ids 0..3 in this order.
BPE_SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
#: Special tokens of the WordPiece tokenizer (bert); ids 0..4 in this order.
WORDPIECE_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: The only special token of the byte-level tokenizer (gpt2): bos, eos and unk; id 0; no pad token.
GPT2_SPECIAL_TOKEN = "<|endoftext|>"

MAX_LENGTH = 128
_BPE_VOCAB_SIZE = 500
_WORDPIECE_VOCAB_SIZE = 500
_BYTE_BPE_VOCAB_SIZE = 600

CORPUS: tuple[str, ...] = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A woman is eating an apple in the kitchen.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "A man is playing a guitar and singing a song.",
    "The children are listening to music in the park.",
    "She plays the piano and loves classical music.",
    "Two men are pushing carts through the woods.",
    "A cheetah is running behind its prey.",
    "The dog is chasing a ball across the green field.",
    "Represent this sentence for searching relevant passages:",
    "Retrieve passages that answer the question.",
    "Retrieve semantically similar text.",
    "Given a query, retrieve relevant documents that answer the query.",
    "Represent the meaning of the sentence in one word.",
    "This sentence means in one word:",
    "Are these two sentences similar or different?",
    "Classify the sentiment of the given movie review.",
    "Identify the topic or theme of the given news article.",
    "Find a question that is a duplicate of the given question.",
    "What is the capital city of France? Paris is the capital of France.",
    "How many people live in Berlin? About 3.7 million people live there.",
    "The weather today is sunny and warm, with a light breeze.",
    "It was raining heavily when we arrived at the station.",
    "He baked fresh bread every morning before work.",
    "The quick brown fox jumps over the lazy dog.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The stock market fell sharply after the announcement.",
    "Machine learning models learn representations from data.",
    "Text embeddings map sentences to vectors in a shared space.",
    "Similar sentences should have similar embeddings.",
    "The soft prompt steers the frozen language model.",
    "A person is slicing an onion with a knife.",
    "A woman is cutting vegetables for dinner.",
    "The train leaves the station at nine o'clock.",
    "My favourite food is pizza with cheese and tomato.",
    "They were walking along the beach at sunset.",
    "Please summarize the following document in a few sentences.",
    "Is this review positive or negative? I loved this film!",
    "Students are reading books in the quiet library.",
    "The horse is eating hay in the barn.",
    "A band is performing live music on stage.",
)

_ASCII_ALPHABET: list[str] = [c for c in string.printable if not c.isspace()]
_WORDPIECE_ALPHABET: list[str] = [c for c in _ASCII_ALPHABET if not c.isupper()]


def _iter_corpus(repeats: int = 3):
    """Yield the corpus a few times so that frequent merges win clearly (deterministic order)."""
    for _ in range(repeats):
        yield from CORPUS


def _train_metaspace_bpe() -> Tokenizer:
    """Sentencepiece-like BPE: word starts carry "▁", case preserved, unknown characters map to <unk>."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=[*_ASCII_ALPHABET, "▁"],
        show_progress=False,
    )
    tok.train_from_iterator(_iter_corpus(), trainer=trainer)
    return tok


def _train_byte_level_bpe() -> Tokenizer:
    """GPT-2-like byte-level BPE: word starts (after a space) carry "Ġ"; every byte is covered."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BYTE_BPE_VOCAB_SIZE,
        special_tokens=[GPT2_SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_iter_corpus(), trainer=trainer)
    return tok


#: Qwen2's pre-tokenisation regex (``transformers`` rebuilds Qwen2 tokenizers with it, so train with it too).
_QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def _train_qwen2_bpe() -> Tokenizer:
    """Qwen2-like byte-level BPE (NFC, regex split, "Ġ" word starts) with the shared BPE special tokens.

    ``AutoTokenizer`` always loads model_type "qwen2" with ``Qwen2Tokenizer``, which rebuilds exactly this
    normaliser / pre-tokeniser / decoder from the saved vocab and merges, so a metaspace BPE would not
    survive the round trip.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BYTE_BPE_VOCAB_SIZE,
        special_tokens=list(BPE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_iter_corpus(), trainer=trainer)
    return tok


def _train_wordpiece() -> Tokenizer:
    """BERT-like uncased WordPiece with "##" continuations and a [CLS] ... [SEP] template.

    ``WordPieceTrainer`` breaks merge ties in a hash-dependent order (its vocab differs between
    processes), so the vocab is instead derived from a deterministic metaspace BPE trained on the
    lower-cased, BERT-pre-tokenised corpus: "▁man" -> "man", "ing" -> "##ing".  Every character of the
    alphabet is also present both as a word start and as a "##" continuation, as in BERT's vocab.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=_WORDPIECE_VOCAB_SIZE,
        initial_alphabet=[*_WORDPIECE_ALPHABET, "▁"],
        show_progress=False,
    )
    bpe.train_from_iterator(_iter_corpus(), trainer=trainer)
    bpe_vocab = bpe.get_vocab()
    pieces = [*WORDPIECE_SPECIAL_TOKENS, *_WORDPIECE_ALPHABET, *(f"##{c}" for c in _WORDPIECE_ALPHABET)]
    for token in sorted(bpe_vocab, key=bpe_vocab.__getitem__):
        piece = token[1:] if token.startswith("▁") else f"##{token}"
        if piece and piece != "##":
            pieces.append(piece)
    vocab = {piece: i for i, piece in enumerate(dict.fromkeys(pieces))}

    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.add_special_tokens(list(WORDPIECE_SPECIAL_TOKENS))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def _family(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; expected one of {KINDS}")
    return "llama" if kind == "llama-embed" else kind


@functools.cache
def _tokenizer_json(family: str) -> str:
    """Train (once per process) and serialise the raw ``tokenizers`` tokenizer for a model family."""
    if family == "bert":
        tok = _train_wordpiece()
    elif family == "gpt2":
        tok = _train_byte_level_bpe()
    elif family == "qwen2":
        tok = _train_qwen2_bpe()
    else:
        tok = _train_metaspace_bpe()
        bos_id = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A",
            pair="<bos> $A <bos>:1 $B:1",
            special_tokens=[("<bos>", bos_id)],
        )
    return tok.to_str()


def build_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """Return a fresh ``PreTrainedTokenizerFast`` for ``kind`` (see module constants for special tokens)."""
    family = _family(kind)
    backend = Tokenizer.from_str(_tokenizer_json(family))
    common = {"tokenizer_object": backend, "model_max_length": MAX_LENGTH, "padding_side": "right"}
    if family == "bert":
        tokenizer = PreTrainedTokenizerFast(
            **common,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    elif family == "gpt2":
        tokenizer = PreTrainedTokenizerFast(
            **common,
            bos_token=GPT2_SPECIAL_TOKEN,
            eos_token=GPT2_SPECIAL_TOKEN,
            unk_token=GPT2_SPECIAL_TOKEN,
            model_input_names=["input_ids", "attention_mask"],
        )
    else:
        tokenizer = PreTrainedTokenizerFast(
            **common,
            # Like real Qwen2, the qwen2 tokenizer has no bos token (the "<bos>" entry stays in the vocab).
            bos_token=None if family == "qwen2" else "<bos>",
            eos_token="<eos>",
            unk_token="<unk>",
            pad_token="<pad>",
            model_input_names=["input_ids", "attention_mask"],
        )
    tokenizer.model_max_length = MAX_LENGTH
    return tokenizer


def _build_config(family: str, tokenizer: PreTrainedTokenizerFast) -> tuple[PretrainedConfig, type]:
    """Tiny config (and model class) whose vocab and special token ids match ``tokenizer``."""
    vocab = len(tokenizer)
    if family == "bert":
        config = BertConfig(
            vocab_size=vocab,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=MAX_LENGTH,
            type_vocab_size=2,
            pad_token_id=tokenizer.pad_token_id,
        )
        return config, BertModel
    if family == "gpt2":
        eot = tokenizer.eos_token_id
        config = GPT2Config(
            vocab_size=vocab,
            n_positions=MAX_LENGTH,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_inner=128,
            bos_token_id=eot,
            eos_token_id=eot,
        )
        return config, GPT2LMHeadModel
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    shared = {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": MAX_LENGTH,
        "tie_word_embeddings": False,
        **ids,
    }
    if family == "llama":
        return LlamaConfig(**shared), LlamaForCausalLM
    if family == "qwen2":
        return Qwen2Config(**shared), Qwen2ForCausalLM
    if family == "gemma3":
        config = Gemma3TextConfig(
            **{**shared, "tie_word_embeddings": True},
            head_dim=16,
            query_pre_attn_scalar=16,
            sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
        )
        return config, Gemma3ForCausalLM
    raise AssertionError(family)  # pragma: no cover


def make_tiny_model(kind: str, directory: Path, seed: int = 0) -> Path:
    """Build a tiny random model + tokenizer of ``kind``, ``save_pretrained`` both to ``directory``.

    ``kind`` is one of :data:`KINDS`; "llama-embed" is the same as "llama" (load it with ``AutoModel``).
    Weights are deterministic for a given ``seed``.  Returns ``directory``.
    """
    family = _family(kind)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family)
    config, model_cls = _build_config(family, tokenizer)
    torch.manual_seed(seed)
    model: PreTrainedModel = model_cls(config)
    model.eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
