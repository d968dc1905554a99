"""Issue 30, loading and settings: a mistyped path is not a Hub id, damaged or edited saved files are named with the
file and the tensor or key, a YAML syntax error is one line. Tiny models (the `saved` run), the CLI through typer."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from reliability_helpers import runner, text
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from promptembedder.cli import app
from promptembedder.hub.registry import ModelNotAvailableError, resolve
from promptembedder.models.config import PromptEmbedderConfig
from promptembedder.models.prompt_embedder import PromptEmbedder

pytestmark = pytest.mark.usefixtures("one_thread")


def _encode(model, tmp_path, *extra):
    texts = tmp_path / "t.txt"
    texts.write_text("one text\nanother text\n")
    return runner.invoke(app, ["encode", str(model), "-i", str(texts), "-o", str(tmp_path / "e.npy"),
                               "--device", "cpu", *extra])


# --- 8. a reference that looks like a path is never a Hub id ---------------------------------------------------
def test_a_mistyped_path_is_an_error_not_a_hub_id(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(saved / "final", tmp_path / "runs" / "final")
    for reference in ("runs/fnal", "./fnal", str(tmp_path / "runs" / "fnal"), "runs/final/../fnal"):
        with pytest.raises(ModelNotAvailableError, match="no such file or folder"):
            resolve(reference)
    assert resolve("org/model") == "org/model"  # a Hub id: no local folder 'org'
    result = _encode("runs/fnal", tmp_path)
    assert result.exit_code == 2
    assert "'runs/fnal' is not available: no such file or folder (runs holds the folders final)" in text(result)


# --- 16. non-finite or misshapen weights are named at load ---------------------------------------------------------
@pytest.mark.parametrize(("damage", "message"), [
    (lambda w: w.fill_(float("nan")), "tensor 'weight' holds .* NaN or infinite values"),
    (lambda w: torch.zeros(w.shape[0] + 1, w.shape[1]), "tensor 'weight' has shape"),
])
def test_damaged_alignment_weights_are_named_at_load(saved, tmp_path, damage, message):
    model = tmp_path / "model"
    shutil.copytree(saved / "final", model)
    path = model / "alignment.safetensors"
    tensors = load_file(path)
    save_file({**tensors, "weight": damage(tensors["weight"])}, path)
    result = _encode(model, tmp_path)
    assert result.exit_code == 2 and "alignment.safetensors" in text(result), text(result)
    assert re.search(message, text(result)), text(result)
    assert not (tmp_path / "e.npy").exists()


# --- 19. wrong types in an edited config name the key and the type ---------------------------------------------------
@pytest.mark.parametrize(("value", "shown"), [("3", "'3' (str)"), (None, "null"), (2.5, "2.5 (float)")])
def test_a_wrongly_typed_config_value_is_named(saved, tmp_path, value, shown):
    model = tmp_path / "model"
    shutil.copytree(saved / "final", model)
    path = model / "promptembedder_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "num_soft_tokens": value}))
    result = _encode(model, tmp_path)
    assert result.exit_code == 2, text(result)
    assert f"num_soft_tokens: expected a whole number, got {shown}" in text(result), text(result)
    with pytest.raises(ValueError, match="tau: expected a number, got '1'"):
        PromptEmbedderConfig(tau="1")


# --- 20. a YAML syntax error is one line: file:line:column -----------------------------------------------------------
def test_a_yaml_syntax_error_is_one_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 1e-3\nbatch_size: [8, 16\nmax_steps: 3\n")
    result = runner.invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert f"{path}:3:10: YAML syntax error: expected ',' or ']', but got ':'" in text(result)


# --- 17. an exported folder embeds with its compiled instructions only -----------------------------------------------
def test_an_exported_folder_uses_its_compiled_prompts_and_refuses_others(saved, tmp_path):
    from promptembedder import evaluation
    from promptembedder.auto import load_embedder
    from promptembedder.export.exporter import export, task_instructions

    model = PromptEmbedder.from_pretrained(saved / "final", device="cpu")
    out = export(saved / "final", tmp_path / "out", {"para": "Find a paraphrase.", **task_instructions(["sts-b"])},
                 verify=False)
    texts = ["one text", "another text"]
    for given in ("Find a paraphrase.", "para"):  # the instruction's text, or the name it was exported under
        result = _encode(out, tmp_path, "--instruction", given)
        assert result.exit_code == 0, text(result)
        ours = model.encode(texts, instruction="Find a paraphrase.")
        assert np.sum(np.load(tmp_path / "e.npy") * ours, axis=1).min() >= 0.9999
    result = _encode(out, tmp_path)  # no instruction: the default one, which export compiles as the query prompt
    assert result.exit_code == 0, text(result)
    assert np.sum(np.load(tmp_path / "e.npy") * model.encode(texts), axis=1).min() >= 0.9999
    result = _encode(out, tmp_path, "--instruction", "Classify the topic.")
    assert result.exit_code == 2 and "embeds only the instructions it was exported with" in text(result)
    result = runner.invoke(app, ["evaluate", str(out), "--output", str(tmp_path / "r.json"), "--device", "cpu"])
    assert result.exit_code == 0, text(result)
    scores = evaluation.read_results(tmp_path / "r.json")[str(out)]
    assert list(scores) == ["sts-b"]  # the tasks it was exported with, not the default sts-b,sick-r
    assert scores["sts-b"]["main_score"] == pytest.approx(evaluation.evaluate(model, ["sts-b"], "test")["sts-b"]
                                                          ["main_score"], abs=1e-3)
    exported = load_embedder(out, device="cpu")
    with pytest.raises(ValueError, match="embeds only the instructions .* not 'Retrieve sentences that are para"):
        evaluation.evaluate(exported, ["mrpc"], "test")


# --- found beyond the list: more places that wrote late, guessed or went on silently -------------------------
def test_more_mistakes_fail_early_with_one_line(saved, models, tmp_path, monkeypatch):
    import promptembedder.evaluation as evaluation

    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: pytest.fail("scored before checking --output"))
    result = runner.invoke(app, ["evaluate", str(saved / "final"), "--output", "/proc/r.json", "--device", "cpu"])
    assert result.exit_code == 2 and "cannot write in /proc" in text(result)
    monkeypatch.undo()
    result = runner.invoke(app, ["export", str(saved / "final"), "/proc/out", "--tasks", "sts-b"])
    assert result.exit_code == 2 and "cannot write the export beside /proc/out" in text(result)
    (tmp_path / "empty").mkdir()
    result = _encode(tmp_path / "empty", tmp_path)
    assert result.exit_code == 2 and "holds no model" in text(result)
    model = tmp_path / "model"
    shutil.copytree(saved / "final", model)
    (model / "promptembedder_config.json").write_text("[1, 2]")
    assert "expected a JSON object" in text(_encode(model, tmp_path))
    result = _encode(models[1], tmp_path, "--instruction", "Find it.")  # a bare backbone would ignore it
    assert result.exit_code == 2 and "--instruction would be ignored" in text(result)
    (tmp_path / "data.jsonl").mkdir()
    result = runner.invoke(app, ["train", "--prompting-model", models[0], "--embedding-model", models[1],
                                 "--train-data", str(tmp_path / "data.jsonl"), "--output-dir", "/proc/run"])
    assert result.exit_code == 2 and "--output-dir /proc/run: cannot create it" in text(result)
    result = runner.invoke(app, ["train", "--prompting-model", models[0], "--embedding-model", models[1],
                                 "--train-data", str(tmp_path / "data.jsonl"), "--output-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "data.jsonl: is a folder, not a data file" in text(result)


def test_a_damaged_checkpoint_is_named_before_training_goes_on(saved, models, tmp_path):
    from reliability_helpers import run

    out = tmp_path / "run"
    shutil.copytree(saved, out)
    (out / "checkpoint" / "data_hashes.json").write_text("{bad")
    with pytest.raises(ValueError, match="data_hashes.json is corrupt or incomplete"):
        run(models, out, resume=True, max_steps=3)
    shutil.copy(saved / "checkpoint" / "data_hashes.json", out / "checkpoint")
    path = out / "checkpoint" / "trainable.safetensors"
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    tensors["alignment.linear.weight"].fill_(float("nan"))
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(ValueError, match="trainable.safetensors: tensor 'alignment.linear.weight' holds .* NaN"):
        run(models, out, resume=True, max_steps=3)


# --- a named model first used by two processes at once is built once, and both read it -----------------------------
def test_a_named_model_first_used_twice_at_once_is_built_once(tmp_path, monkeypatch):
    import threading
    import time

    from promptembedder.hub import registry

    builds: list[int] = []

    def slow_build(target, write_gguf):  # the real build takes a minute: long enough for a second run to start
        builds.append(1)
        time.sleep(0.5)
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(b"built")

    monkeypatch.setattr(registry, "_build", slow_build)
    target = tmp_path / "cache" / "gemma3-270m"
    paths: list = []
    threads = [threading.Thread(target=lambda: paths.append(registry._dequantise(target, None))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds == [1] and paths == [target, target]
    assert (target / "model.safetensors").read_bytes() == b"built"
