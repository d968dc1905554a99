"""The shared data sets (STS Benchmark, SICK-R, SNLI), the example types and the line readers every reader uses.

Every reader fails loudly: a malformed line raises `DataError` naming the file and the 1-based line
before anything is returned, so a bad file can never silently shrink a training set or an evaluation. Callers
that knowingly accept dirty data pass `skip_invalid=True` and get a warning with the count of lines skipped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

__all__ = [
    "DATA_ENV_VAR",
    "NLI_INSTRUCTION",
    "STS_INSTRUCTION",
    "DataError",
    "DataWarning",
    "STSPair",
    "TrainExample",
    "data_dir",
    "load_sick",
    "load_snli_triplets",
    "load_sts",
    "load_sts_train_pairs",
]

PathLike = Union[str, "os.PathLike[str]"]

DATA_ENV_VAR = "PROMPTEMBEDDER_DATA"

# Task instructions in the E5 / MTEB style, prepended to queries by the models that use them.
STS_INSTRUCTION = "Retrieve semantically similar text."
NLI_INSTRUCTION = "Given a premise, retrieve a hypothesis that is entailed by the premise."

_STS_SPLITS = ("train", "dev", "test")
_SNLI_LABELS = frozenset({"entailment", "neutral", "contradiction", "-"})


def data_dir() -> Path:
    """Locate the shared data folder: `$PROMPTEMBEDDER_DATA`, else `../shared/data` from cwd or repo root.

    The data is never copied into the repository, so it has to be found next to it; the environment variable
    wins so that CI and other machines can point elsewhere.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"${DATA_ENV_VAR} is set to {env!r}, which is not a directory")
        return path.resolve()
    repo_root = Path(__file__).resolve().parents[3]
    candidates = [Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(str(c.resolve()) for c in candidates)
    raise FileNotFoundError(f"data directory not found (tried {tried}); set ${DATA_ENV_VAR} to its location")


class DataError(ValueError):
    """A problem in a data file, located by path and 1-based line (`None` for whole-file problems)."""

    def __init__(self, path: PathLike, line: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the exception picklable (e.g. raised inside a DataLoader worker process).
        return (type(self), (self.path, self.line, self.reason))


class DataWarning(UserWarning):
    """Emitted when `skip_invalid=True` dropped lines, so that skipping is never silent."""


@dataclass(frozen=True)
class TrainExample:
    """One contrastive training example: a query, its positive, optional hard negatives and instruction.

    `instructions`, when given, are the wordings of the example's task: each batch of the task draws one of them
    (`training.batching`), so P learns the task from many phrasings; `instruction` is then the one in use (the
    first unless a batch drew another). `document_prompt_type` is how the positive and negatives are read, as
    evaluation reads the task's second side: "query" (behind the instruction, symmetric tasks) or "document"
    (without it: retrieval's documents), so that training and evaluation give documents the same prompt.
    """

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction: str | None = None
    instructions: tuple[str, ...] = ()
    document_prompt_type: str = "query"

    def __post_init__(self) -> None:
        if self.document_prompt_type not in ("query", "document"):
            raise ValueError(f"document_prompt_type must be 'query' or 'document', got {self.document_prompt_type!r}")
        # Accept any sequence of negatives but store a tuple, so examples stay hashable and immutable.
        if not isinstance(self.negatives, tuple):
            object.__setattr__(self, "negatives", tuple(self.negatives))
        if not isinstance(self.instructions, tuple):
            object.__setattr__(self, "instructions", tuple(self.instructions))
        if self.instructions and self.instruction is None:
            object.__setattr__(self, "instruction", self.instructions[0])
        if self.instructions and self.instruction not in self.instructions:
            raise ValueError(f"instruction {self.instruction!r} is not one of the example's instructions")


@dataclass(frozen=True)
class STSPair:
    """A sentence pair with a gold similarity score (STS Benchmark 0-5, SICK relatedness 1-5)."""

    sentence1: str
    sentence2: str
    score: float


# ----------------------------------------------------------------------------------------------------
# Low-level line reading
# ----------------------------------------------------------------------------------------------------


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Yield `(line_number, raw_bytes)` without line endings; bytes so a bad byte is pinned to its line."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataError(path, None, "is a folder, not a data file: give the file inside it") from None
    except FileNotFoundError:
        raise DataError(path, None, "no such file") from None
    except OSError as err:
        raise DataError(path, None, f"cannot read it: {err.strerror or err}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data:
        return
    pieces = data.split(b"\n")
    if pieces[-1] == b"":  # the file ends with a newline: no extra line after it
        pieces.pop()
    for number, raw in enumerate(pieces, start=1):
        yield number, raw[:-1] if raw.endswith(b"\r") else raw


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            path, number, f"invalid UTF-8 byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
        ) from None


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` for every line, raising `DataError` on undecodable bytes."""
    for number, raw in _raw_lines(path):
        yield number, _decode(path, number, raw)


def _check_text(path: Path, number: int, name: str, value: Any) -> str:
    """Return `value` if it is a non-blank string; blank or non-string texts would train on garbage."""
    if not isinstance(value, str):
        raise DataError(path, number, f"{name!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(path, number, f"{name!r} is empty or whitespace-only")
    return value


def _parse_score(path: Path, number: int, text: str, low: float, high: float) -> float:
    try:
        score = float(text)
    except ValueError:
        raise DataError(path, number, f"score {text!r} is not a number") from None
    if math.isnan(score) or not low <= score <= high:
        raise DataError(path, number, f"score {score} outside [{low}, {high}]")
    return score


def _root(root: PathLike | None) -> Path:
    return Path(root) if root is not None else data_dir()


# ----------------------------------------------------------------------------------------------------
# Built-in readers for the shared data sets
# ----------------------------------------------------------------------------------------------------


def load_sts(split: str = "test", root: PathLike | None = None) -> list[STSPair]:
    """Read an STS Benchmark split (`train` 5749, `dev` 1500, `test` 1379 pairs).

    Tab-separated without header; score, sentence1 and sentence2 are fields 4, 5 and 6 *by position* because
    some rows carry extra trailing source notes, and quotes are literal text, so lines are split on tabs only.
    """
    if split not in _STS_SPLITS:
        raise ValueError(f"unknown STS Benchmark split {split!r} (expected one of {_STS_SPLITS})")
    path = _root(root) / "stsbenchmark" / f"sts-{split}.csv"
    pairs: list[STSPair] = []
    for number, line in _text_lines(path):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) < 7:
            raise DataError(path, number, f"expected at least 7 tab-separated fields, got {len(fields)}")
        score = _parse_score(path, number, fields[4], 0.0, 5.0)
        sentence1 = _check_text(path, number, "sentence1", fields[5])
        sentence2 = _check_text(path, number, "sentence2", fields[6])
        pairs.append(STSPair(sentence1, sentence2, score))
    if not pairs:
        raise DataError(path, None, "no pairs")
    return pairs


def load_sick(root: PathLike | None = None) -> list[STSPair]:
    """Read the 9927 SICK relatedness pairs (sentence_A, sentence_B, relatedness_score by header name)."""
    path = _root(root) / "sick" / "SICK.txt"
    pairs: list[STSPair] = []
    columns: dict[str, int] | None = None
    width = 0
    for number, line in _text_lines(path):
        if not line:
            continue
        fields = line.split("\t")
        if columns is None:
            columns = {name: i for i, name in enumerate(fields)}
            width = len(fields)
            missing = [c for c in ("sentence_A", "sentence_B", "relatedness_score") if c not in columns]
            if missing:
                raise DataError(path, number, f"header lacks columns {missing}")
            continue
        if len(fields) != width:
            raise DataError(path, number, f"expected {width} tab-separated fields, got {len(fields)}")
        score = _parse_score(path, number, fields[columns["relatedness_score"]], 1.0, 5.0)
        sentence1 = _check_text(path, number, "sentence_A", fields[columns["sentence_A"]])
        sentence2 = _check_text(path, number, "sentence_B", fields[columns["sentence_B"]])
        pairs.append(STSPair(sentence1, sentence2, score))
    if not pairs:
        raise DataError(path, None, "no pairs")
    return pairs


def load_sts_train_pairs(
    min_score: float = 4.0, instruction: str | None = None, root: PathLike | None = None
) -> list[TrainExample]:
    """STS Benchmark *train* pairs scoring `>= min_score` as (query=sentence1, positive=sentence2).

    Only the train split is used: dev is for model selection and test for evaluation.
    """
    return [
        TrainExample(p.sentence1, p.sentence2, (), instruction)
        for p in load_sts("train", root)
        if p.score >= min_score
    ]


def json_rows(path: Path, keys: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line, object) from a JSON-lines file whose objects carry `keys` as strings; blank lines skipped."""
    for number, text in _text_lines(path):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, number, f"malformed JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(path, number, f"expected a JSON object, got {type(row).__name__}")
        for key in keys:
            if key not in row:
                raise DataError(path, number, f"missing key {key!r}")
            if not isinstance(row[key], str):
                raise DataError(path, number, f"{key!r} must be a string, got {type(row[key]).__name__}")
        yield number, row


def read_instructions_json(path: PathLike) -> Any:
    """The parsed JSON of an instructions file ({name: instruction}); read errors name the file and what to do."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"instructions file {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"instructions file {path}: cannot read it ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"instructions file {path}: invalid JSON at line {err.lineno}, column {err.colno}: "
                         f"{err.msg}") from None


def _snli_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield validated SNLI rows (the four keys used, all strings; gold_label one of the known labels)."""
    for number, row in json_rows(path, ("sentence1", "sentence2", "gold_label", "captionID")):
        if row["gold_label"] not in _SNLI_LABELS:
            raise DataError(path, number, f"unknown gold_label {row['gold_label']!r}")
        if row["gold_label"] in ("entailment", "contradiction"):
            _check_text(path, number, "sentence1", row["sentence1"])
            _check_text(path, number, "sentence2", row["sentence2"])
        yield number, row


def load_snli_triplets(
    splits: Sequence[str] = ("dev", "test"), instruction: str | None = None, root: PathLike | None = None
) -> list[TrainExample]:
    """SNLI (premise, entailed hypothesis, contradicted hypothesis) triplets for hard-negative training.

    Rows are grouped by (captionID, premise); a premise with at least one entailment and one contradiction
    gives one example per entailed hypothesis, contradictions assigned round-robin. Neutral and '-' (no
    consensus) rows are ignored. Order follows first appearance in the files, so it is deterministic.
    """
    if isinstance(splits, str):
        splits = (splits,)
    base = _root(root) / "snli"
    groups: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for split in splits:
        for _, row in _snli_rows(base / f"snli_1.0_{split}.jsonl"):
            label = row["gold_label"]
            if label not in ("entailment", "contradiction"):
                continue
            entailed, contradicted = groups.setdefault((row["captionID"], row["sentence1"]), ([], []))
            (entailed if label == "entailment" else contradicted).append(row["sentence2"])
    examples: list[TrainExample] = []
    for (_, premise), (entailed, contradicted) in groups.items():
        if not contradicted:
            continue
        for i, positive in enumerate(entailed):
            # Round-robin, but never pair a hypothesis with an identical text as its own negative.
            rotation = contradicted[i % len(contradicted) :] + contradicted[: i % len(contradicted)]
            negative = next((n for n in rotation if n != positive), None)
            if negative is not None:
                examples.append(TrainExample(premise, positive, (negative,), instruction))
    return examples
