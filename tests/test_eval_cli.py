"""`promptembedder evaluate` task selection and its user errors: clear messages, exit code 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptembedder.cli import app

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, ["evaluate", *args])
    return result, " ".join(result.output.split())


def test_unknown_task_lists_tasks_and_types(tmp_path: Path) -> None:
    result, text = run(str(tmp_path / "no-model"), "--tasks", "sts,scifcat")
    assert result.exit_code == 2 and "Traceback" not in text
    assert "unknown task 'scifcat'" in text and "scifact" in text and "clustering" in text


def test_output_checked_before_any_model_loads(tmp_path: Path) -> None:
    existing = tmp_path / "results.json"
    existing.write_text("{}")
    result, text = run(str(tmp_path / "no-model"), "--tasks", "all", "--output", str(existing))
    assert result.exit_code == 2 and "exists; choose another file or pass --overwrite" in text
    assert existing.read_text() == "{}"  # never overwritten silently
    result, text = run(str(tmp_path / "no-model"), "--tasks", "all", "--output", str(tmp_path))
    assert result.exit_code == 2 and "is a directory" in text


def test_bad_instructions_file(tmp_path: Path) -> None:
    path = tmp_path / "instructions.json"
    path.write_text(json.dumps({"banking77": "Classify.", "bank77": "x"}))
    result, text = run(str(tmp_path / "no-model"), "--tasks", "banking77", "--instructions", str(path))
    assert result.exit_code == 2 and "unknown task 'bank77'" in text and "instructions.json" in text


@pytest.fixture
def empty_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    (root / "mrpc").mkdir(parents=True)
    monkeypatch.setenv("PROMPTEMBEDDER_DATA", str(root))
    return root


def test_missing_and_malformed_data_files(tiny_model_dir, empty_data: Path) -> None:
    model = str(tiny_model_dir("bert"))
    result, text = run(model, "--tasks", "mrpc", "--device", "cpu")
    assert result.exit_code == 2 and "mrpc/test.tsv not found" in text and "Traceback" not in text
    (empty_data / "mrpc" / "test.tsv").write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta\n")
    result, text = run(model, "--tasks", "pair", "--device", "cpu")
    assert result.exit_code == 2 and "mrpc/test.tsv:2: expected 5 fields, got 4" in text


def test_two_task_types_give_two_tables_and_an_average(tiny_model_dir, empty_data: Path, tmp_path: Path) -> None:
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    (empty_data / "mrpc" / "test.tsv").write_text(header + "1\t1\t2\ta cat\ta cat sat\n0\t3\t4\ta dog\tthe sun\n")
    (empty_data / "twentynewsgroups").mkdir()
    (empty_data / "twentynewsgroups" / "test.tsv").write_text(
        "label\tdoc_id\tsubject\n" + "".join(f"{g}\t{i}\t{g} subject {i}\n" for g in ("a", "b") for i in range(5)))
    out = tmp_path / "r.json"
    result, text = run(str(tiny_model_dir("bert")), "--tasks", "mrpc,clustering", "--device", "cpu",
                       "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "Pair classification (max AP x100)" in text and "Clustering (V-measure x100)" in text
    assert "Average per task type" in text
    saved = json.loads(out.read_text())["models"][0]
    assert set(saved["scores"]) == {"mrpc", "twentynewsgroups"} and saved["average"] is not None
