"""Corpus encoding: streamed input of every format, shards that resume after a crash, two processes like one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from promptembedder.corpus import CorpusError, encode_corpus, read_embeddings, read_rows, shard_name
from promptembedder.models.prompt_embedder import PromptEmbedder

TEXTS = [f"Passage {i}: {' '.join(['river', 'stone', 'light', 'market', 'song'][: 1 + i % 5])} number {i}."
         for i in range(30)]
INSTRUCTION = "Given a question, retrieve passages that answer it."


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_model_dir) -> Path:
    torch.manual_seed(0)
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("bert")),
                           num_soft_tokens=2, device="cpu")
    path = tmp_path_factory.mktemp("corpus_model") / "model"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(saved_model):
    return PromptEmbedder.from_pretrained(saved_model, device="cpu").eval()


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": f"doc{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def test_every_format_reads_the_same_rows(tmp_path, corpus):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"doc{i}" for i in range(len(TEXTS))]
    (tmp_path / "c.csv").write_text("_id,text\n" + "".join(f'{i},"{t}"\n' for i, t in zip(ids, TEXTS, strict=True)))
    pq.write_table(pa.table({"_id": ids, "text": TEXTS}), tmp_path / "c.parquet")
    (tmp_path / "c.txt").write_text("\n".join(TEXTS) + "\n")
    expected = list(zip(ids, TEXTS, strict=True))
    for path in (corpus, tmp_path / "c.csv", tmp_path / "c.parquet"):
        assert list(read_rows(path, id_column="_id")) == expected, path
    assert list(read_rows(tmp_path / "c.txt")) == list(enumerate(TEXTS))


def test_bad_rows_are_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text key"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: no 'text' key \(keys: body\)"):
        list(read_rows(bad))
    bad.write_text('{"text": "fine"}\n{"text": "  "}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: empty text"):
        list(read_rows(bad))
    bad.write_text('{"text": "fine"}\nnot json\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: not a JSON object"):
        list(read_rows(bad))
    (tmp_path / "t.txt").write_text("a\n")
    with pytest.raises(CorpusError, match="no columns"):
        list(read_rows(tmp_path / "t.txt", id_column="id"))


def test_interrupted_encoding_resumes_to_the_same_shards(tmp_path, corpus, model, monkeypatch):
    """A crash after two of five shards, a half-written third and a damaged fourth: the rerun encodes only shards
    2-4 and the folder equals one uninterrupted run's."""
    settings = {"instruction": INSTRUCTION, "id_column": "_id", "shard_size": 7, "batch_size": 4}
    whole = encode_corpus(model, corpus, tmp_path / "whole", **settings)
    assert whole["rows"] == 30 and len(whole["shards"]) == 5

    calls = []
    real_encode = type(model).encode

    def crashing(self, texts, **kwargs):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_encode(self, texts, **kwargs)

    monkeypatch.setattr(type(model), "encode", crashing)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        encode_corpus(model, corpus, out, **settings)
    assert sorted(p.name for p in out.glob("shard-*")) == [shard_name(0), shard_name(1)]
    (out / f".{shard_name(2)}.partial").write_bytes(b"PAR1 half a shard")
    (out / shard_name(3)).write_bytes(b"PAR1 not a whole parquet file")
    calls.clear()
    monkeypatch.setattr(type(model), "encode", lambda self, texts, **kw: calls.append(len(texts)) or
                        real_encode(self, texts, **kw))
    resumed = encode_corpus(model, corpus, out, **settings)
    assert calls == [7, 7, 2]  # shards 2, 3 (damaged) and 4 only
    assert resumed["shards"] == whole["shards"] and not list(out.glob(".*partial"))
    ids, vectors = read_embeddings(out)
    whole_ids, whole_vectors = read_embeddings(tmp_path / "whole")
    assert ids == whole_ids == [f"doc{i}" for i in range(30)]
    assert np.array_equal(vectors, whole_vectors)
    assert np.allclose(vectors, model.encode(TEXTS, instruction=INSTRUCTION, prompt_type="document"), atol=1e-6)


def test_other_settings_are_refused_float16_on_overwrite(tmp_path, corpus, model):
    out = tmp_path / "out"
    encode_corpus(model, corpus, out, shard_size=16)
    with pytest.raises(CorpusError, match="other settings.*dtype.*--overwrite"):
        encode_corpus(model, corpus, out, shard_size=16, dtype="float16")
    encode_corpus(model, corpus, out, shard_size=16, dtype="float16", overwrite=True)
    ids, vectors = read_embeddings(out)
    assert ids == list(range(30)) and vectors.dtype == np.float16
    assert np.allclose(vectors, model.encode(TEXTS, prompt_type="document"), atol=2e-3)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("x")
    with pytest.raises(CorpusError, match="not empty"):
        encode_corpus(model, corpus, tmp_path / "full")


def test_two_processes_encode_like_one(tmp_path, corpus, saved_model, model):
    """`promptembedder encode --output-dir` under torchrun (2 CPU processes, gloo): each rank writes its shards, and
    the folder holds the one-process vectors."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    out = tmp_path / "two"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "promptembedder", "encode", str(saved_model), "-i", str(corpus), "--output-dir", str(out),
               "--id-column", "_id", "--shard-size", "4", "--instruction", INSTRUCTION, "--prompt-type", "document",
               "--device", "cpu"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "30 embeddings in 8 shards" in proc.stdout
    # each rank its share: shards 0, 2, 4, 6 (16 texts) on rank 0, shards 1, 3, 5, 7 (14) on rank 1
    assert "Encoding (rank 0): 16 texts" in proc.stderr and "Encoding (rank 1): 14 texts" in proc.stderr
    one = encode_corpus(model, corpus, tmp_path / "one", id_column="_id", shard_size=4, instruction=INSTRUCTION)
    assert json.loads((out / "manifest.json").read_text())["shards"] == one["shards"]
    ids, vectors = read_embeddings(out)
    one_ids, one_vectors = read_embeddings(tmp_path / "one")
    assert ids == one_ids and np.allclose(vectors, one_vectors, atol=1e-6)


def test_command_line_mistakes_are_one_line(tmp_path, corpus, saved_model):
    from typer.testing import CliRunner

    from promptembedder.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["encode", str(saved_model), "-i", str(corpus)])
    assert result.exit_code == 2 and "--output FILE.npy" in result.output and "--output-dir" in result.output
    result = runner.invoke(app, ["encode", "no-such-model", "-i", str(corpus), "--output-dir", str(tmp_path / "o"),
                                 "--text-column", "body"])
    assert result.exit_code == 2 and "no 'body' key" in result.output  # before the (missing) model is looked up
    assert "Traceback" not in result.output
