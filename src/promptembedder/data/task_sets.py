"""Readers for the retrieval, classification, pair-classification, clustering and NLI sets in the shared data folder.

Like `promptembedder.data.datasets`, every reader validates each row and raises `DataError` naming the file and
1-based line, so a damaged file fails before anything is encoded instead of quietly shrinking an evaluation.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .datasets import DataError, PathLike, TrainExample, _check_text, _root, _text_lines, json_rows

__all__ = [
    "ClusteringData",
    "LabelledPair",
    "LabelledTexts",
    "NLIPair",
    "RetrievalData",
    "load_agnews",
    "load_banking77",
    "load_esnli_pairs",
    "load_esnli_triplets",
    "load_mrpc",
    "load_scifact",
    "load_sst2",
    "load_trec",
    "load_twentynewsgroups",
]

NLI_LABELS = frozenset({"entailment", "neutral", "contradiction"})
#: SciFact's "dev" split: this many of the 809 training claims, drawn with DEV_SEED and held out of "train",
#: so a run can select its checkpoint on retrieval without touching the 300 test claims.
SCIFACT_DEV_CLAIMS = 100
DEV_SEED = 0


@dataclass(frozen=True)
class RetrievalData:
    """BEIR layout: queries and corpus by id, and qrels `{query_id: {doc_id: relevance}}`."""

    queries: dict[str, str]
    corpus: dict[str, str]
    qrels: dict[str, dict[str, int]]


@dataclass(frozen=True)
class LabelledTexts:
    """Texts with one label each (classification pools, clustering sets)."""

    texts: list[str]
    labels: list[str]


#: Clustering data is labelled texts; the alias names the role.
ClusteringData = LabelledTexts


@dataclass(frozen=True)
class NLIPair:
    """A premise, a hypothesis and their relation (`entailment`, `neutral` or `contradiction`)."""

    premise: str
    hypothesis: str
    label: str


@dataclass(frozen=True)
class LabelledPair:
    """A sentence pair with a binary label (1 = paraphrase / duplicate)."""

    sentence1: str
    sentence2: str
    label: int


def _read_text(path: Path) -> str:
    """The whole file as text; an undecodable byte is reported with its line by the line reader."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"data file {path} not found (see ../shared/data/README.md)") from None
    except UnicodeDecodeError:
        for _ in _text_lines(path):
            pass
        raise


def _csv_rows(path: Path, delimiter: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> Iterator[tuple[int, list[str]]]:
    """Every row of a delimited file with its first 1-based line; a quoted field may span lines (Banking77 has
    some), so rows are located with the csv reader's line count. A malformed row is a DataError at its line."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    number = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(path, number, f"malformed row ({err})") from None
        start, number = number, reader.line_num + 1
        yield start, fields


def _header_rows(path: Path, delimiter: str, columns: Sequence[str], quoting: int) -> Iterator[tuple[int, dict]]:
    """Rows of a delimited file with a header, as dicts of the needed columns, each with its first 1-based line."""
    header: dict[str, int] | None = None
    width = 0
    for start, fields in _csv_rows(path, delimiter, quoting):
        if not fields or not any(f.strip() for f in fields):
            continue
        if header is None:
            header = {name: i for i, name in enumerate(fields)}
            width = len(fields)
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(path, start, f"header lacks columns {missing} (found {fields})")
            continue
        if len(fields) != width:
            raise DataError(path, start, f"expected {width} fields, got {len(fields)}")
        yield start, {c: fields[header[c]] for c in columns}
    if header is None:
        raise DataError(path, None, "empty file (no header)")


def _check_split(split: str, splits: Sequence[str], what: str) -> None:
    if split not in splits:
        raise ValueError(f"{what} has no split {split!r} (valid: {', '.join(splits)})")


def load_scifact(split: str = "test", root: PathLike | None = None) -> RetrievalData:
    """SciFact in BEIR layout: the claims of `split` over the full 5,183-abstract corpus.

    `test` is the 300 claims MTEB scores; BEIR's 809 training claims are split into `dev` (100, drawn with a
    fixed seed) and `train` (the other 709). Documents are `title + " " + text` with outer spaces stripped, as
    MTEB embeds them.
    """
    _check_split(split, ("train", "dev", "test"), "scifact")
    base = _root(root) / "scifact"
    corpus: dict[str, str] = {}
    path = base / "corpus.jsonl"
    for number, row in json_rows(path, ("_id", "title", "text")):
        corpus[row["_id"]] = _check_text(path, number, "title + text", f"{row['title']} {row['text']}".strip())
    path = base / "qrels" / f"{'test' if split == 'test' else 'train'}.tsv"
    qrels: dict[str, dict[str, int]] = {}
    for number, row in _header_rows(path, "\t", ("query-id", "corpus-id", "score"), csv.QUOTE_NONE):
        try:
            score = int(row["score"])
        except ValueError:
            raise DataError(path, number, f"score {row['score']!r} is not an integer") from None
        if row["corpus-id"] not in corpus:
            raise DataError(path, number, f"corpus-id {row['corpus-id']!r} is not in corpus.jsonl")
        qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = score
    if split != "test":
        held_out = set(random.Random(DEV_SEED).sample(sorted(qrels), min(SCIFACT_DEV_CLAIMS, len(qrels) // 2)))
        qrels = {q: d for q, d in qrels.items() if (q in held_out) == (split == "dev")}
    qrels_path, path = path, base / "queries.jsonl"
    queries = {}
    for number, row in json_rows(path, ("_id", "text")):
        if row["_id"] in qrels:
            queries[row["_id"]] = _check_text(path, number, "text", row["text"])
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise DataError(qrels_path, None, f"query ids {missing[:5]} are not in queries.jsonl")
    return RetrievalData(queries, corpus, qrels)


def load_banking77(split: str = "test", root: PathLike | None = None) -> LabelledTexts:
    """Banking77 texts and intents (train 10,003, test 3,080), in file order (the probe's sampling depends on it)."""
    _check_split(split, ("train", "test"), "banking77")
    return _labelled_texts(_root(root) / "banking77" / f"{split}.csv", ",", "text", "category", csv.QUOTE_MINIMAL)


def load_mrpc(split: str = "test", root: PathLike | None = None) -> list[LabelledPair]:
    """MRPC pairs (train 4,076, test 1,725); Quality 1 = paraphrase. Quotes are literal text."""
    _check_split(split, ("train", "test"), "mrpc")
    path = _root(root) / "mrpc" / f"{split}.tsv"
    pairs = []
    columns = ("Quality", "#1 String", "#2 String")
    for number, row in _header_rows(path, "\t", columns, csv.QUOTE_NONE):
        if row["Quality"] not in ("0", "1"):
            raise DataError(path, number, f"Quality must be 0 or 1, got {row['Quality']!r}")
        pairs.append(LabelledPair(_check_text(path, number, "#1 String", row["#1 String"]),
                                  _check_text(path, number, "#2 String", row["#2 String"]), int(row["Quality"])))
    if not pairs:
        raise DataError(path, None, "no rows")
    return pairs


def load_twentynewsgroups(split: str = "test", root: PathLike | None = None) -> LabelledTexts:
    """20 Newsgroups subject lines with their newsgroup (train 11,314, test 7,532)."""
    _check_split(split, ("train", "test"), "twentynewsgroups")
    return _labelled_texts(_root(root) / "twentynewsgroups" / f"{split}.tsv", "\t", "subject", "label", csv.QUOTE_NONE)


def load_trec(split: str = "test", root: PathLike | None = None) -> LabelledTexts:
    """TREC questions with their coarse answer type (ABBR, DESC, ENTY, HUM, LOC, NUM): train 5,452, test 500.

    The files are Latin-1 (the training file has bytes that are not UTF-8), one `COARSE:fine question` per line.
    """
    _check_split(split, ("train", "test"), "trec")
    path = _root(root) / "trec" / ("train_5500.label" if split == "train" else "TREC_10.label")
    try:
        lines = path.read_bytes().decode("latin-1").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"data file {path} not found (see ../shared/data/README.md)") from None
    texts, labels = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        label, _, question = line.partition(" ")
        coarse, colon, fine = label.partition(":")
        if not (colon and coarse.isalpha() and coarse.isupper() and fine):
            raise DataError(path, number, f"expected 'COARSE:fine question', got {line[:40]!r}")
        texts.append(_check_text(path, number, "question", question.strip()))
        labels.append(coarse)
    if not texts:
        raise DataError(path, None, "no rows")
    return LabelledTexts(texts, labels)


def load_sst2(split: str = "test", root: PathLike | None = None) -> LabelledTexts:
    """SST-2 sentences with `positive` / `negative` (train 67,349, dev 872, test 1,821): `text \t 0|1`, no header."""
    _check_split(split, ("train", "dev", "test"), "sst2")
    path = _root(root) / "sst2" / f"{split}.tsv"
    texts, labels = [], []
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        text, _, label = line.rpartition("\t")
        if label.strip() not in ("0", "1"):
            raise DataError(path, number, f"expected 'text<TAB>0|1', got label {label[:20]!r}")
        texts.append(_check_text(path, number, "text", text.strip()))
        labels.append(("negative", "positive")[int(label)])
    if not texts:
        raise DataError(path, None, "no rows")
    return LabelledTexts(texts, labels)


def load_agnews(split: str = "test", root: PathLike | None = None) -> LabelledTexts:
    """AG News test (7,600; the only split here): `title description` with the class name from classes.txt."""
    _check_split(split, ("test",), "agnews")
    base = _root(root) / "agnews"
    names = [line.strip() for _, line in _text_lines(base / "classes.txt") if line.strip()]
    path = base / "test.csv"
    texts, labels = [], []
    for start, fields in _csv_rows(path):
        if len(fields) != 3 or not fields[0].isdigit() or not 1 <= int(fields[0]) <= len(names):
            raise DataError(path, start, f"expected class (1-{len(names)}), title, description; got {fields[:3]}")
        title = _check_text(path, start, "title", fields[1].strip())
        texts.append(f"{title} {fields[2]}".replace("\\", " ").strip())  # a backslash marks a line break
        labels.append(names[int(fields[0]) - 1])
    if not texts:
        raise DataError(path, None, "no rows")
    return LabelledTexts(texts, labels)


def _labelled_texts(path: Path, delimiter: str, text: str, label: str, quoting: int) -> LabelledTexts:
    texts, labels = [], []
    for number, row in _header_rows(path, delimiter, (text, label), quoting):
        texts.append(_check_text(path, number, text, row[text]))
        labels.append(_check_text(path, number, label, row[label]))
    if not texts:
        raise DataError(path, None, "no rows")
    return LabelledTexts(texts, labels)


def load_esnli_pairs(split: str, root: PathLike | None = None) -> list[NLIPair]:
    """e-SNLI pairs of `split` (dev 9,842, test 9,824) in file order; labels entailment, neutral, contradiction."""
    _check_split(split, ("dev", "test"), "esnli")
    path = _root(root) / "esnli" / f"esnli_{split}.csv"
    pairs = []
    for number, row in _header_rows(path, ",", ("gold_label", "Sentence1", "Sentence2"), csv.QUOTE_MINIMAL):
        label = row["gold_label"]
        if label not in NLI_LABELS:
            raise DataError(path, number, f"unknown gold_label {label!r} (expected one of {sorted(NLI_LABELS)})")
        pairs.append(NLIPair(_check_text(path, number, "Sentence1", row["Sentence1"]),
                             _check_text(path, number, "Sentence2", row["Sentence2"]), label))
    return pairs


def load_esnli_triplets(splits: Sequence[str] = ("dev", "test"), instruction: str | None = None,
                        root: PathLike | None = None) -> list[TrainExample]:
    """e-SNLI (premise, entailed hypothesis, contradicted hypothesis) triplets.

    Rows with the same premise are grouped; each entailed hypothesis gets the premise's contradictions
    round-robin as its hard negative. Premises without both labels give nothing. Order is file order.
    """
    if isinstance(splits, str):
        splits = (splits,)
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for split in splits:
        for pair in load_esnli_pairs(split, root):
            if pair.label != "neutral":
                entailed, contradicted = groups.setdefault(pair.premise, ([], []))
                (entailed if pair.label == "entailment" else contradicted).append(pair.hypothesis)
    examples = []
    for premise, (entailed, contradicted) in groups.items():
        for i, positive in enumerate(entailed):
            negatives = [n for n in contradicted[i % max(len(contradicted), 1):] + contradicted if n != positive]
            if negatives:
                examples.append(TrainExample(premise, positive, (negatives[0],), instruction))
    return examples
