"""Architecture-only references (`arch:`): real configurations, random weights, refused where results matter."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM
from typer.testing import CliRunner

from promptembedder import PromptEmbedder
from promptembedder.bench.sweep import parse_configs, run_sweep, split_method, synthetic_examples
from promptembedder.cli import app
from promptembedder.models.architectures import NOTICE, build_model, build_tokenizer

# Published parameter counts of the real models (model cards / safetensors index), in billions, causal-LM heads.
PUBLISHED = {"mistral-7b": 7.24, "qwen2.5-0.5b": 0.494, "qwen2.5-1.5b": 1.54, "qwen2.5-7b": 7.62, "llama-3-8b": 8.03}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_configurations_have_the_published_size(name):
    model = build_model(AutoModelForCausalLM, f"arch:{name}", device="meta", dtype=torch.bfloat16)
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in model.parameters())
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert count == pytest.approx(PUBLISHED[name], rel=0.01)


def test_tokenizer_gives_one_token_per_word():
    for name, bos in (("arch:tiny-llama", 1), ("arch:tiny-qwen2", 0)):
        tokenizer = build_tokenizer(name)
        ids = tokenizer("A man, eating zxqv food.")["input_ids"]
        assert len(ids) == 5 + bos and (ids[0] == tokenizer.bos_token_id) == bool(bos)
        assert tokenizer.unk_token_id in ids  # an unknown word is still one token


def test_python_api_builds_on_the_device_and_says_random(capfd):
    model = PromptEmbedder(prompting_model="arch:tiny-qwen2", embedding_model="arch:tiny-llama", device="cpu")
    assert NOTICE in capfd.readouterr().err
    vectors = model.encode(["a man is eating food", "a dog runs"], instruction="Retrieve similar text.")
    assert vectors.shape == (2, 64)
    assert model.alignment.init_method.startswith("lstsq")  # the two word-level vocabularies are shared
    assert isinstance(model.backbone.model, AutoModel._model_mapping[type(model.backbone.model.config)])


@pytest.mark.parametrize("command", [
    ["train", "--embedding-model", "arch:tiny-llama", "--max-steps", "1"],
    ["train", "--prompting-model", "arch:tiny-qwen2", "--max-steps", "1"],
    ["evaluate", "arch:tiny-llama", "--tasks", "sts-b"],
    ["transfer", "--from", "some/model", "--embedding-model", "arch:tiny-llama"],
])
def test_train_evaluate_transfer_refuse_random_weights(command):
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "architecture-only reference" in result.output and "random weights" in result.output


def test_a_saved_model_built_from_random_weights_is_refused(tmp_path):
    PromptEmbedder(prompting_model="arch:tiny-qwen2", embedding_model="arch:tiny-llama",
                   device="cpu").save_pretrained(tmp_path / "m")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "m"), "--tasks", "sts-b"])
    assert result.exit_code == 2 and "built from arch:tiny-qwen2, arch:tiny-llama" in result.output


def test_parse_configs():
    assert parse_configs("8,16, 32:8") == [(8, None), (16, None), (32, 8)]
    with pytest.raises(ValueError, match="BATCH:CHUNK"):
        parse_configs("8,x")


def test_split_method():
    assert split_method("lora+gc") == ({"method": "lora"}, True)
    assert split_method("promptembedder-query")[1] is False
    with pytest.raises(ValueError, match="'\\+gc'"):
        split_method("promptembedder-fsdp")


def test_synthetic_examples_have_the_asked_length():
    tokenizer = build_tokenizer("arch:tiny-llama")
    example = synthetic_examples(2, 12)[1]
    assert {len(tokenizer(t)["input_ids"]) for t in (example.query, example.positive, *example.negatives)} == {13}


def test_sweep_measures_every_configuration(tmp_path):
    """The GPU bench script's code path on CPU: both methods, a GradCache configuration, the warm cache, phases."""
    methods = ["lora", "promptembedder-query", "promptembedder-query-diversity"]
    report = run_sweep("arch:tiny-llama", "arch:tiny-qwen2", methods, [(2, None), (4, 2)],
                       seq_len=8, warmup=1, steps=1, lora_rank=4, output_dir=tmp_path, device="cpu")
    assert not report["failures"]
    steps = [r for r in report["records"] if r["kind"] == "step"]
    assert {(r["method"], r["batch_size"], r["grad_cache_chunk_size"], r["doc_cache"]) for r in steps} == {
        ("lora", 2, None, "cold"), ("lora", 4, 2, "cold"),
        *((m, b, c, cache) for m in methods[1:] for b, c in ((2, None), (4, 2)) for cache in ("cold", "warm"))}
    assert all(r["step_s"] > 0 and r["peak_memory_mb"] > 0 for r in steps)
    phases = next(r for r in report["records"] if r["kind"] == "phases")
    assert set(phases["phases_s"]) >= {"generation", "loss + backward"}
    assert (tmp_path / "promptembedder-query" / "profile_step.txt").read_text().count("\n") > 10
    markdown = (tmp_path / "sweep.md").read_text()
    assert "| 4 | 2 |" in markdown and "generation" in markdown
    assert "The prompt-diversity term" in markdown and markdown.count("x |") >= 4
    assert json.loads((tmp_path / "sweep.json").read_text())["settings"]["configs"] == [[2, None], [4, 2]]
