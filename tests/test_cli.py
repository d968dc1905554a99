"""The command line, the benchmarks and the demo, end to end on tiny offline models.

These check that each command runs and writes well-formed results; speed and memory are not asserted.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from typer.testing import CliRunner

from promptembedder.auto import load_embedder
from promptembedder.bench.demo import DemoConfig, Results, results_table, run_demo
from promptembedder.bench.subsets import InstructionSizes
from promptembedder.bench.training import bench_converge, bench_encode, bench_train
from promptembedder.cli import app
from promptembedder.data.datasets import data_dir
from promptembedder.models.config import PromptEmbedderConfig
from promptembedder.models.prompt_embedder import PromptEmbedder

runner = CliRunner()


def have_data() -> bool:
    try:
        data_dir()
    except FileNotFoundError:
        return False
    return True


needs_data = pytest.mark.skipif(not have_data(), reason="needs ../shared/data")


pytestmark = pytest.mark.usefixtures("one_thread")


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=160)  # noqa: SIM115


def write_pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


PAIRS = [{"query": f"a man is eating food number {i}", "positive": f"a man eats a meal {i}",
          "negative": f"a woman is riding a horse {i}"} for i in range(16)]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory) -> Path:
    """A PromptEmbedder trained for 3 steps through `promptembedder train CONFIG --flags`."""
    out = tmp_path_factory.mktemp("cli")
    data = write_pairs(out / "pairs.jsonl", PAIRS)
    config = out / "config.yaml"
    config.write_text(yaml.safe_dump({
        "prompting_model": str(tiny_model_dir("llama")), "embedding_model": str(tiny_model_dir("bert")),
        "train_data": [str(data)], "max_steps": 50, "batch_size": 8, "do_eval": False, "device": "cpu",
        "show_progress_bar": False,
    }))
    result = runner.invoke(app, ["train", str(config), "--max-steps", "3", "--output-dir", str(out / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run" / "train_summary.json").read_text())["steps"] == 3  # the flag overrode the file
    return out / "run"


def test_train_summary_records_the_environment(trained):
    """What the run was measured on: the versions that decide its numerics, and the device."""
    import torch
    import transformers

    environment = json.loads((trained / "train_summary.json").read_text())["environment"]
    assert environment["libraries"]["transformers"] == transformers.__version__
    assert environment["libraries"]["torch"] == torch.__version__
    assert environment["device"] == "cpu" and environment["threads"] >= 1
    assert environment["cpu"] and environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_train_writes_a_loadable_model(trained):
    """The trained model reloads through the generic loader and encodes unit vectors."""
    model = load_embedder(trained / "final", device="cpu")
    vectors = model.encode(["a man is eating food", "a horse"], instruction="x")
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_train_reports_bad_data_with_file_and_line(tiny_model_dir, tmp_path):
    """A malformed line stops `train` with exit code 2 and file:line, before any model loads."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n{not json\n")
    result = runner.invoke(app, ["train", "--train-data", str(bad), "--prompting-model", "/nonexistent",
                                 "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output.replace("\n", "")


def test_train_flags_reach_the_config(tmp_path):
    """--fsdp and --grad-cache-chunk-size are checked with the rest of the config, before any model loads."""
    result = runner.invoke(app, ["train", "--method", "lora", "--fsdp", "full_shard", "--output-dir",
                                 str(tmp_path / "run")])
    assert result.exit_code == 2 and "fsdp shards the prompting model" in result.output.replace("\n", " ")
    result = runner.invoke(app, ["train", "--fsdp", "zero3", "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "fsdp must be one of" in result.output.replace("\n", " ")
    result = runner.invoke(app, ["train", "--grad-cache-chunk-size", "0", "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "grad_cache_chunk_size must be >= 1" in result.output.replace("\n", " ")
    result = runner.invoke(app, ["train", "--method", "lora", "--freeze-alignment", "--output-dir",
                                 str(tmp_path / "run")])
    assert result.exit_code == 2 and "train_alignment=False freezes" in result.output.replace("\n", " ")
    result = runner.invoke(app, ["train", "--method", "lora", "--prompt-diversity", "1", "--output-dir",
                                 str(tmp_path / "run")])
    assert result.exit_code == 2 and "prompt_diversity keeps" in result.output.replace("\n", " ")


@needs_data
def test_evaluate_compares_models_and_writes_json(trained, tiny_model_dir, tmp_path, monkeypatch):
    """`evaluate A B --output` prints one table with both and writes their scores as JSON."""
    import promptembedder.evaluation as evaluation

    pairs = evaluation.load_sts("test")[:40]
    monkeypatch.setitem(evaluation.TASKS, "sts-b", evaluation.TaskSpec("sts-b", "STSBenchmark", ("test",),
                                                                       lambda split: pairs))
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["evaluate", str(trained / "final"), str(tiny_model_dir("bert")), "--tasks", "sts-b",
                                 "--output", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    text = json.dumps(saved)
    assert str(trained / "final") in text and str(tiny_model_dir("bert")) in text
    assert "spearman" in text


def test_evaluate_unknown_task_is_a_clear_error(trained):
    result = runner.invoke(app, ["evaluate", str(trained / "final"), "--tasks", "nope", "--device", "cpu"])
    assert result.exit_code == 2
    assert "unknown task" in result.output


def test_encode_and_decode_prompt(trained, tmp_path):
    """`encode` writes an (n, d) .npy equal to the library's encode; `decode-prompt` prints the prompt."""
    texts = tmp_path / "texts.txt"
    texts.write_text("a man is eating food\na horse\n")
    out = tmp_path / "emb.npy"
    result = runner.invoke(app, ["encode", str(trained / "final"), "-i", str(texts), "-o", str(out),
                                 "--instruction", "x", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    expected = load_embedder(trained / "final", device="cpu").encode(["a man is eating food", "a horse"],
                                                                        instruction="x")
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)
    result = runner.invoke(app, ["decode-prompt", str(trained / "final"), "--instruction", "x"])
    assert result.exit_code == 0 and "'x' ->" in result.output and "cosine" not in result.output
    model = PromptEmbedder.from_pretrained(trained / "final", device="cpu")
    pair = ["Find a paraphrase.", "Classify the topic of the news article."]
    expected = model.prompt_similarity(pair)
    assert torch.allclose(expected.diagonal(), torch.ones(2)) and expected[0, 1] < 1 - 1e-4
    assert torch.allclose(model.prompt_similarity([pair[1], pair[0], pair[1]]), expected[[1, 0, 1]][:, [1, 0, 1]])
    result = runner.invoke(app, ["decode-prompt", str(trained / "final"), "--instruction", pair[0], "--instruction",
                                 pair[1]])
    assert result.exit_code == 0 and "#2 'Classify the topic" in result.output and "cosine" in result.output
    assert f"{float(expected[0, 1]):.4f}" in result.output


def test_encode_names_the_file_on_bad_input(trained, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("fine\n\n")
    result = runner.invoke(app, ["encode", str(trained / "final"), "-i", str(texts), "-o", str(tmp_path / "e.npy")])
    assert result.exit_code == 2
    assert "texts.txt:2" in result.output.replace("\n", "")  # file:line (issue 16; was the list index texts[1])


def test_transfer_command(trained, tiny_model_dir, tmp_path):
    """`transfer` trains a new W for another backbone (here with a deep prompt) and says whether the target was
    reached."""
    data = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    result = runner.invoke(app, ["transfer", "--from", str(trained / "final"), "--embedding-model",
                                 str(tiny_model_dir("llama")), "--train-data", str(data), "--max-steps", "2",
                                 "--batch-size", "8", "--output-dir", str(tmp_path / "t"), "--device", "cpu",
                                 "--eval-steps", "1", "--target-score", "-100", "--prompt-position", "deep"])
    if not have_data():
        pytest.skip("the dev evaluation needs ../shared/data")
    assert result.exit_code == 0, result.output
    assert "reached -100.0 at step 0 after 0.0 s" in result.output  # the transferred start, scored before training
    assert PromptEmbedderConfig.load(tmp_path / "t" / "final").prompt_position == "deep"


@needs_data
def test_bench_train_json_is_well_formed(tiny_model_dir, tmp_path):
    """Every method runs in its own process; the JSON holds medians, memory and ratios to LoRA, plus a PNG."""
    methods = ["promptembedder-query", "promptembedder-both", "lora", "prompt-tuning", "full"]
    report = bench_train(embedding_model=str(tiny_model_dir("bert")), prompting_model=str(tiny_model_dir("llama")),
                         batch_size=4, seq_len=8, steps=2, methods=methods, rounds=1, lora_rank=4,
                         output_dir=tmp_path, device="cpu", console=quiet())
    saved = json.loads((tmp_path / "bench_train.json").read_text())
    assert saved["results"].keys() == set(methods) == report["results"].keys()
    for values in saved["results"].values():
        assert values["median_step_time_s"] > 0 and values["peak_memory_mb"] > 0
        assert values["trainable_parameters"] > 0 and values["step_time_vs_lora"] > 0
    assert saved["results"]["lora"]["step_time_vs_lora"] == pytest.approx(1.0)
    assert saved["machine"]["device"] == "cpu" and saved["settings"]["steps"] == 2
    assert (tmp_path / "bench_train.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="unknown methods"):
        bench_train(embedding_model="x", prompting_model="y", batch_size=4, seq_len=8, steps=1, methods=["nope"],
                    rounds=1, lora_rank=4, output_dir=tmp_path, device="cpu", console=quiet())


@needs_data
def test_bench_train_distributed(tiny_model_dir, tmp_path):
    """Under torchrun with 2 processes: DDP and both FSDP strategies, with each rank's peak memory; FSDP alone
    is refused."""
    methods = ["promptembedder-query", "promptembedder-fsdp", "promptembedder-fsdp-grad-op"]
    report = bench_train(embedding_model=str(tiny_model_dir("bert")), prompting_model=str(tiny_model_dir("llama")),
                         batch_size=4, seq_len=8, steps=2, methods=methods, rounds=1, lora_rank=4,
                         output_dir=tmp_path, device="cpu", console=quiet(), nproc_per_node=2,
                         grad_cache_chunk_size=3)
    assert report["settings"]["nproc_per_node"] == 2 and report["settings"]["grad_cache_chunk_size"] == 3
    for method in methods:
        run = report["runs"][method][0]
        assert len(run["rank_peak_memory_mb"]) == 2 and run["peak_memory_mb"] == max(run["rank_peak_memory_mb"])
        assert run["steps"] == 2
        assert report["results"][method]["examples_per_s"] == pytest.approx(8 / run["median_step_time_s"])
    with pytest.raises(ValueError, match="nproc_per_node >= 2"):
        bench_train(embedding_model="x", prompting_model="y", batch_size=4, seq_len=8, steps=1,
                    methods=["promptembedder-fsdp"], rounds=1, lora_rank=4, output_dir=tmp_path, device="cpu",
                    console=quiet())


@needs_data
def test_bench_encode_json_is_well_formed(tiny_model_dir, tmp_path):
    report = bench_encode(model=None, embedding_model=str(tiny_model_dir("bert")),
                          prompting_model=str(tiny_model_dir("llama")), num_texts=32, batch_size=8,
                          output_dir=tmp_path, device="cpu", console=quiet())
    saved = json.loads((tmp_path / "bench_encode.json").read_text())
    assert saved["num_texts"] == 32 == report["num_texts"]
    assert {"promptembedder", "bare backbone"} <= saved["texts_per_s"].keys()
    assert all(rate > 0 for rate in saved["texts_per_s"].values())


@needs_data
def test_demo_runs_end_to_end_on_tiny_models(tiny_model_dir, tmp_path, monkeypatch):
    """Every stage on tiny models: scores for every row, the transfer reading, the table, plots and the report."""
    import promptembedder.bench.subsets as subsets_mod

    short = tuple(t for t in subsets_mod.unseen_tasks() if t != "licl/yahoo_answers_topics")
    monkeypatch.setattr(subsets_mod, "unseen_tasks", lambda: short)  # its instruction overflows the tiny P's context
    config = DemoConfig(output_dir=str(tmp_path), prompting_model=str(tiny_model_dir("llama")),
                        embedding_model=str(tiny_model_dir("gemma3")), transfer_model=str(tiny_model_dir("llama")),
                        reference_model=str(tiny_model_dir("bert")), steps=2, transfer_steps=2,
                        transfer_eval_steps=1, transfer_eval_pairs=20, tasks=("sts-b", "banking77"),
                        transfer_tasks=("sts-b",),
                        instruction_sizes=InstructionSizes(nli_items=10, licl_test=4, newsgroups_pool_per_label=2,
                                                           newsgroups_test=10, n_experiments=1, samples_per_label=2,
                                                           nli_wordings=("training",)))
    report = run_demo(config, quiet())
    trained = {"prompt tuning (static suffix)", "LoRA r=8 on E", "PromptEmbedder"}
    transferred = {"transfer: P frozen, new W only", "LoRA from scratch on E'", "prompt tuning from scratch on E'"}
    assert set(report["scores"]) == {"bare E, last token", "PromptEOL hard-text prompt", *trained, *transferred,
                                     f"{tiny_model_dir('bert')}, bare"}
    assert all(set(report["scores"][name]) == {"sts-b", "banking77"} for name in trained)
    assert all(set(report["scores"][name]) == {"sts-b"} for name in transferred)
    instructed = report["instruction_scores"]  # every row but the transfer's, under the tasks' own instructions
    assert set(instructed) == set(report["scores"]) - transferred
    assert instructed["prompt tuning (static suffix)"]["nli_follow"] == 50.0  # a static prompt cannot read them
    assert instructed[f"{tiny_model_dir('bert')}, bare"]["nli_follow"] == 50.0
    assert all(0 <= row["unseen_tasks"] <= 100 and len(row["unseen_per_task"]) == 10 for row in instructed.values())
    costs = report["costs"]
    assert costs["PromptEmbedder"]["trainable"] > costs["LoRA r=8 on E"]["trainable"] > 0
    assert costs["transfer: P frozen, new W only"]["trainable"] < costs["PromptEmbedder"]["trainable"]
    assert all(costs[name]["step_s"] > 0 and costs[name]["peak_mb"] > 0 for name in trained | transferred)
    transfer = report["transfer"]
    assert set(transfer["step0_dev"]) == set(transfer["reached"]) == transferred
    assert all(-100 <= value <= 100 for value in transfer["step0_dev"].values())  # every run is scored at step 0
    assert transfer["reached"]["LoRA from scratch on E'"] is not None  # the target is one every run reaches
    assert transfer["reached_lora_target"]["LoRA from scratch on E'"] is not None
    assert transfer["speedup_vs_lora"]["words"]
    for png in ("training_curves.png", "scores_by_task_type.png", f"transfer-{tiny_model_dir('llama').name}/"
                                                                   "transfer_curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "demo_results.json").read_text())["transfer"]["target"] == transfer["target"]
    saved = json.loads((tmp_path / "promptembedder" / "demo_training_config.json").read_text())
    settings = (saved["prompt_position"], saved["learning_rate"], saved["alignment_learning_rate"])
    assert settings == ("suffix", 1e-4, 1e-2)

    # The transfer stage alone, to an encoder E', from the P the demo trained: E' reads the prompt as a prefix.
    encoder = tiny_model_dir("bert")
    only = DemoConfig(**{**asdict(config), "transfer_model": str(encoder), "transfer_only": True})
    report = run_demo(only, quiet())
    assert set(report["scores"]) == transferred and set(report["backbones"].values()) == {str(encoder)}
    folder = tmp_path / f"transfer-{encoder.name}"
    assert json.loads((folder / "transfer_results.json").read_text())["transfer"]["model"] == str(encoder)
    moved = json.loads((folder / "w-only" / "best" / "promptembedder_config.json").read_text())
    assert moved["prompt_position"] == "prefix" and moved["embedding_model"] == str(encoder)
    assert (tmp_path / "demo_results.json").is_file()  # the full demo's report is left as it was


def test_demo_transfer_only_needs_a_finished_demo(tmp_path):
    config = DemoConfig(output_dir=str(tmp_path), transfer_only=True)
    with pytest.raises(FileNotFoundError, match="run the whole demo"):
        run_demo(config, quiet())


def test_demo_table_shares_are_against_lora_on_the_same_backbone_and_tasks() -> None:
    config = DemoConfig(embedding_model="E", transfer_model="F", tasks=("sts-b", "sick-r", "banking77"))
    scores = {"LoRA r=8 on E": {"sts-b": 60.0, "sick-r": 40.0, "banking77": 50.0},
              "PromptEmbedder": {"sts-b": 66.0, "sick-r": 44.0, "banking77": 55.0},
              "LoRA from scratch on E'": {"sts-b": 50.0},
              "transfer: P frozen, new W only": {"sts-b": 25.0}}
    backbones = {"LoRA r=8 on E": "E", "PromptEmbedder": "E", "LoRA from scratch on E'": "F",
                 "transfer: P frozen, new W only": "F"}
    results = Results(quiet())
    results.scores, results.backbones = scores, backbones
    table = results_table(results, config, config.tasks)
    columns = {column.header: list(column.cells) for column in table.columns}
    assert columns["sts"] == ["50.00", "55.00", "50.00", "25.00"]  # STS-B and SICK-R averaged
    assert columns["classif."] == ["50.00", "55.00", "-", "-"]
    assert columns["% of LoRA"] == ["100.0", "110.0", "100.0", "50.0"]


@needs_data
def test_bench_converge_reports_steps_to_target(trained, tiny_model_dir, tmp_path, monkeypatch):
    """Each run is scored at step 0 and stops at the target: one that every start meets takes 0 steps and 0 s."""
    import promptembedder.training.dev_evaluation as dev_evaluation_mod
    import promptembedder.training.trainer as trainer_mod
    from promptembedder.data.files import load_examples

    data = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    monkeypatch.setattr(trainer_mod, "load_training_data", lambda specs, skip_invalid=False, **kwargs:
                        load_examples(data))
    real_load_sts = dev_evaluation_mod.load_sts
    monkeypatch.setattr(dev_evaluation_mod, "load_sts", lambda split: real_load_sts(split)[:40])
    report = bench_converge(target_score=-100.0, embedding_model=str(tiny_model_dir("bert")),
                            prompting_model=str(tiny_model_dir("llama")), transfer_from=str(trained / "final"),
                            transfer_model=str(tiny_model_dir("llama")), max_steps=3, eval_steps=1, batch_size=8,
                            output_dir=tmp_path, device="cpu", console=quiet())
    saved = json.loads((tmp_path / "bench_converge.json").read_text())
    assert set(saved["results"]) == set(report["results"]) and len(saved["results"]) == 4
    for result in saved["results"].values():
        assert result["steps_to_target"] == 0 and result["steps_run"] == 0 and result["seconds_to_target"] == 0.0
        assert result["best_dev_score"] is not None and result["median_step_time_s"] is None


def test_every_training_setting_is_a_train_option_or_file_only():
    """`promptembedder train`'s options and TrainingConfig's fields agree: a new setting cannot be forgotten."""
    import inspect
    from dataclasses import fields

    from promptembedder.cli.train import FILE_ONLY, train
    from promptembedder.training import TrainingConfig

    options = set(inspect.signature(train).parameters) - {"config"}
    settings = {f.name for f in fields(TrainingConfig)}
    assert options <= settings, f"train options that are not TrainingConfig fields: {sorted(options - settings)}"
    assert not options & FILE_ONLY, sorted(options & FILE_ONLY)
    assert settings == options | FILE_ONLY, f"neither an option nor FILE_ONLY: {sorted(settings - options - FILE_ONLY)}"
