"""Issue 16, items 8-13: clear errors instead of tracebacks (config typing, corrupt files, the encode command,
model sizes, CLI checks, the saved model's manifest). Tiny models; the CLI through typer's test runner."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from reliability_helpers import EXAMPLES, config, run, runner, text, truncate

import promptembedder.auto as auto
from promptembedder.cli import app
from promptembedder.hub.serialization import MANIFEST_FILE, CorruptFileError, ManifestWarning
from promptembedder.models.config import PromptEmbedderConfig
from promptembedder.models.prompt_embedder import PromptEmbedder
from promptembedder.training import Trainer, TrainingConfig

pytestmark = pytest.mark.usefixtures("one_thread")


# --- 8. YAML typing ------------------------------------------------------------------------------------------
def test_yaml_numbers_are_typed_and_bad_values_named(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("learning_rate: 1e-3\ntemperature: '0.1'\nmax_steps: 1e2\ntrain_data: x.jsonl\n")
    cfg = TrainingConfig.from_file(path)
    assert (cfg.learning_rate, cfg.temperature, cfg.max_steps, cfg.train_data) == (0.001, 0.1, 100, ["x.jsonl"])
    for line, message in [("batch_size: eight", "batch_size: expected a whole number, got 'eight'"),
                          ("max_steps: 2.5", "max_steps: expected a whole number, got 2.5"),
                          ("hard: 'yes'", "hard: expected true or false"),
                          ("train_data:\n  - path: x.jsonl\n    instrction: Find it.",
                           "train_data\\[0\\]: unknown key 'instrction' \\(value 'Find it.'\\)")]:
        path.write_text(line + "\n")
        with pytest.raises(ValueError, match=f"t.yaml: .*{message}|{message}"):
            TrainingConfig.from_file(path)


# --- 9. corrupt files -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["trainable.safetensors", "trainer_state.pt"])
def test_a_truncated_checkpoint_file_is_named(models, saved, tmp_path, name):
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    truncate(out / "checkpoint" / name)
    with pytest.raises(CorruptFileError, match=f"{name} is corrupt or incomplete.*start a new run"):
        run(models, out, resume=True)


def test_a_truncated_model_file_is_named_by_the_cli(saved, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(saved / "final", model)
    truncate(model / "prompting_model.safetensors")
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n")
    result = runner.invoke(app, ["encode", str(model), "-i", str(texts), "-o", str(tmp_path / "e.npy")])
    assert result.exit_code == 2 and "prompting_model.safetensors is corrupt or incomplete" in text(result)
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- 10. the encode command --------------------------------------------------------------------------------------
def test_encode_input_and_output_errors(saved, tmp_path, monkeypatch):
    model = str(saved / "final")
    texts = tmp_path / "t.txt"
    texts.write_bytes(b"fine\ncaf\xe9\n")
    out = str(tmp_path / "e.npy")
    result = runner.invoke(app, ["encode", model, "-i", str(tmp_path / "none.txt"), "-o", out])
    assert result.exit_code == 2 and "none.txt: no such file" in text(result)
    result = runner.invoke(app, ["encode", model, "-i", str(texts), "-o", out])
    assert result.exit_code == 2 and "t.txt:2: not UTF-8" in text(result)
    texts.write_text("fine\nalso fine\n")
    monkeypatch.setattr(auto, "load_embedder", lambda *a, **k: pytest.fail("the model loaded before the checks"))
    result = runner.invoke(app, ["encode", model, "-i", str(texts), "-o", str(tmp_path / "missing" / "e.npy")])
    assert result.exit_code == 2 and "the folder" in text(result) and "does not exist" in text(result)
    monkeypatch.undo()
    result = runner.invoke(app, ["encode", model, "-i", str(texts), "-o", str(tmp_path / "x"), "--device", "cpu"])
    assert result.exit_code == 0 and (tmp_path / "x.npy").is_file() and "x.npy" in text(result)
    result = runner.invoke(app, ["encode", str(tmp_path / "no-model"), "-i", str(texts), "-o", out])
    assert result.exit_code == 2 and "no-model" in text(result) and "t.txt" not in text(result)


# --- 11. models and sizes --------------------------------------------------------------------------------------
def test_an_encoder_as_p_and_too_many_soft_tokens_fail_at_start(models):
    with pytest.raises(ValueError, match="P must be a causal LM"):
        PromptEmbedder(prompting_model=models[1], embedding_model=models[1], device="cpu")
    with pytest.raises(ValueError, match="num_soft_tokens=127 does not fit the embedding model's context"):
        PromptEmbedder(prompting_model=models[0], embedding_model=models[1], num_soft_tokens=127, device="cpu")
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        TrainingConfig(max_length=0)
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        PromptEmbedderConfig(max_length=0)


# --- 12. remaining tracebacks -------------------------------------------------------------------------------------
def test_cli_errors_are_one_line_and_debug_shows_the_traceback(saved, tmp_path, monkeypatch):
    model = str(saved / "final")
    result = runner.invoke(app, ["decode-prompt", str(tmp_path / "nothing"), "--instruction", "x"])
    assert result.exit_code == 2 and "not a saved PromptEmbedder" in text(result)
    result = runner.invoke(app, ["encode", model, "-i", "-", "-o", str(tmp_path / "e.npy"), "--device", "foo"],
                           input="hello\n")
    assert result.exit_code == 2 and "--device 'foo' is not a device" in text(result)
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["encode", model, "-i", "-", "-o", str(tmp_path / "e.npy"), "--device", "cuda"],
                               input="hello\n")
        assert result.exit_code == 2 and "CUDA is not available" in text(result)
    import promptembedder.evaluation as evaluation

    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("scored before checking --output"))
    result = runner.invoke(app, ["evaluate", model, "--output", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 2 and "is a directory" in text(result)
    result = runner.invoke(app, ["--debug", "decode-prompt", str(tmp_path / "nothing"), "--instruction", "x"])
    assert isinstance(result.exception, FileNotFoundError)


def test_fsdp_without_torchrun_warns(models, tmp_path):
    with pytest.warns(UserWarning, match="fsdp='full_shard' is ignored"):
        Trainer(config(models, tmp_path / "run", fsdp="full_shard"), examples=EXAMPLES).folder.close()


def test_encode_to_stdout_writes_the_npy_bytes_alone(saved, tmp_path):
    """`-o -` is a pipe, not a file named '-.npy': stdout holds the array and nothing else."""
    import io

    import numpy as np

    texts = tmp_path / "t.txt"
    texts.write_text("fine\nalso fine\n")
    result = runner.invoke(app, ["encode", str(saved / "final"), "-i", str(texts), "-o", "-"])
    assert result.exit_code == 0, result.output
    vectors = np.load(io.BytesIO(result.stdout_bytes))
    reference = PromptEmbedder.from_pretrained(saved / "final", device="cpu").encode(["fine", "also fine"])
    assert vectors.shape == reference.shape and np.allclose(vectors, reference, atol=1e-5)
    assert "written to stdout" in result.stderr and not (tmp_path / "-.npy").exists()


# --- 13. a saved model's manifest -----------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["folder", "binary"])
def test_a_damaged_manifest_is_refused_and_forced_past(saved, tmp_path, damage):
    """A folder or binary junk where manifest.json should be is damage (not an old save without one): refused by
    name, and --force / strict=False loads past it with a warning, as its message says."""
    model = tmp_path / "model"
    shutil.copytree(saved / "final", model)
    (model / MANIFEST_FILE).unlink()
    if damage == "folder":
        (model / MANIFEST_FILE).mkdir()
    else:
        (model / MANIFEST_FILE).write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(CorruptFileError, match=f"{MANIFEST_FILE} is corrupt or incomplete.*strict=False"):
        PromptEmbedder.from_pretrained(model, device="cpu")
    with pytest.warns(ManifestWarning, match="checks are skipped"):
        PromptEmbedder.from_pretrained(model, device="cpu", strict=False)
    texts = tmp_path / "t.txt"
    texts.write_text("hello\n")
    result = runner.invoke(app, ["encode", str(model), "-i", str(texts), "-o", str(tmp_path / "e.npy")])
    assert result.exit_code == 2 and "is corrupt or incomplete" in text(result)


def test_manifest_refuses_an_edited_config_or_another_backbone(saved, models, tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(saved / "final", model)
    assert json.loads((model / MANIFEST_FILE).read_text())["format_version"] == 1
    path = model / "promptembedder_config.json"
    original = json.loads(path.read_text())
    path.write_text(json.dumps({**original, "num_soft_tokens": 3}))
    with pytest.raises(ValueError, match="config was edited"):
        PromptEmbedder.from_pretrained(model, device="cpu")
    with pytest.warns(ManifestWarning, match="loading anyway"):
        assert PromptEmbedder.from_pretrained(model, device="cpu", strict=False).config.num_soft_tokens == 3
    other = tmp_path / "other_bert"
    shutil.copytree(models[1], other)
    bert_config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**bert_config, "num_hidden_layers": 1}))
    path.write_text(json.dumps({**original, "embedding_model": str(other)}))
    with pytest.raises(ValueError, match="embedding_model .* is not the model it was trained with"):
        PromptEmbedder.from_pretrained(model, device="cpu")


def test_a_model_saved_before_a_config_field_existed_still_loads(saved, tmp_path):
    """A save from before `train_alignment` existed: its config file and manifest lack the field, and it loads
    with the field's default (the manifest checks the config as saved, not as re-serialised with new defaults)."""
    from promptembedder.hub.serialization import config_hash

    model = tmp_path / "model"
    shutil.copytree(saved / "final", model)
    path, manifest_path = model / "promptembedder_config.json", model / MANIFEST_FILE
    older = {k: v for k, v in json.loads(path.read_text()).items() if k != "train_alignment"}
    path.write_text(json.dumps(older))
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "config_hash": config_hash(older)}))
    assert PromptEmbedder.from_pretrained(model, device="cpu").config.train_alignment is True
    path.write_text(json.dumps({**older, "train_alignment": False}))  # and an edit is still an edit
    with pytest.raises(ValueError, match="config was edited"):
        PromptEmbedder.from_pretrained(model, device="cpu")


def test_baseline_manifest_round_trips_and_refuses_an_edit(models, tmp_path):
    """A fully fine-tuned baseline (E saved as a copy) reloads cleanly, so does a save from before a config field
    existed; an edited config is refused."""
    import warnings

    from promptembedder.hub.serialization import config_hash

    run(models, tmp_path / "run", method="full", max_steps=1)
    final = tmp_path / "run" / "final"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ManifestWarning)
        auto.load_embedder(final, device="cpu")
    path = final / "embedder_config.json"
    original = json.loads(path.read_text())
    older = {k: v for k, v in original.items() if k != "template"}  # a save from before `template` existed
    path.write_text(json.dumps(older))
    manifest_path = final / MANIFEST_FILE
    saved_manifest = manifest_path.read_text()
    manifest_path.write_text(json.dumps({**json.loads(saved_manifest), "config_hash": config_hash(older)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ManifestWarning)
        auto.load_embedder(final, device="cpu")
    manifest_path.write_text(saved_manifest)
    path.write_text(json.dumps({**original, "pooling": "cls"}))
    with pytest.raises(ValueError, match="config was edited"):
        auto.load_embedder(final, device="cpu")
