"""The many-task sources: classification as pairs, instruction-contrastive NLI (never from e-SNLI test), SciTail
near misses, and the `multitask` mix (enough tasks and wordings, none held out)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_cli import needs_data

from promptembedder.data import task_sources as many
from promptembedder.data.instructions import catalogue, held_out_instructions, training_instructions, unseen_tasks
from promptembedder.data.task_sets import NLIPair

ESNLI_HEADER = "idx,gold_label,Sentence1,Sentence2\n"


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_classification_pairs_take_a_same_label_positive_and_an_other_label_negative() -> None:
    texts = ["good", "great", "fine", "bad", "awful", "alone"]
    labels = ["pos", "pos", "pos", "neg", "neg", "solo"]
    examples = many.classification_pairs(texts, labels, "sst2")
    label = dict(zip(texts, labels, strict=True))
    assert [e.query for e in examples] == texts[:5]  # "alone" has no other text of its label
    for e in examples:
        assert e.positive != e.query and label[e.positive] == label[e.query]
        assert label[e.negatives[0]] != label[e.query]
        assert e.instructions == training_instructions("sst2") and e.instruction == e.instructions[0]
    assert examples == many.classification_pairs(texts, labels, "sst2")  # seeded


def test_nli_gives_each_premise_both_views_under_their_own_instructions() -> None:
    pairs = [NLIPair("P", "E1", "entailment"), NLIPair("P", "C1", "contradiction"), NLIPair("P", "N", "neutral"),
             NLIPair("P", "E2", "entailment"), NLIPair("Q", "E3", "entailment"), NLIPair("X", "E", "entailment"),
             NLIPair("X", "C", "contradiction")]
    examples = many.nli_contrastive(pairs, exclude=frozenset({"X"}))
    entail, contradict = training_instructions("nli-entailment"), training_instructions("nli-contradiction")
    assert [(e.query, e.positive, e.negatives, e.instructions) for e in examples] == [
        ("P", "E1", ("C1",), entail), ("P", "E2", ("C1",), entail), ("P", "C1", ("E1",), contradict)]
    assert not set(entail) & set(contradict)


def test_nli_sources_never_read_esnli_test_nor_cad_test(tmp_path: Path) -> None:
    write(tmp_path, "esnli/esnli_dev.csv", ESNLI_HEADER + "0,entailment,P,E\n1,contradiction,P,C\n"
                                           "2,entailment,T,E\n3,contradiction,T,C\n")
    write(tmp_path, "esnli/esnli_test.csv", ESNLI_HEADER + "0,neutral,T,anything\n")
    assert {e.query for e in many.esnli_contrastive(tmp_path)} == {"P"}  # T is an e-SNLI test premise
    cad = "sentence1\tsentence2\tgold_label\nA.\tB.\tentailment\nA.\tNot B.\tcontradiction\n"
    write(tmp_path, "cad_nli/train.tsv", cad)
    write(tmp_path, "cad_nli/dev.tsv", cad.replace("A.", "T"))
    write(tmp_path, "cad_nli/test.tsv", "not even a header\n")
    assert {e.query for e in many.cad_contrastive(tmp_path)} == {"A."}


def test_scitail_hypothesis_finds_its_entailing_premise_with_a_neutral_near_miss(tmp_path: Path) -> None:
    write(tmp_path, "scitail/dev.tsv",
          "Cells divide by mitosis.\tCells divide.\t1\nCells are small.\tCells divide.\t0\n")
    write(tmp_path, "scitail/test.tsv", "Rain is water.\tRain falls.\t1\n")
    examples = many.scitail_triplets(tmp_path)
    assert [(e.query, e.positive, e.negatives) for e in examples] == [
        ("Cells divide.", "Cells divide by mitosis.", ("Cells are small.",)), ("Rain falls.", "Rain is water.", ())]


def test_licl_sources_cover_only_training_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = many.licl_training_tasks()
    never = {t.removeprefix("licl/") for t in (*unseen_tasks(), *catalogue().not_trained)}
    assert len(tasks) >= 20 and not never & set(tasks)
    folder = tmp_path / "licl" / "copa"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "task_type": "classification", "options": ["cause", "effect"], "instruction": "i", "instruction_2": "j",
        "inference_prompt": "Sentence 1: {premise}\nSentence 2: {answer}\nRelation:"}), encoding="utf-8")
    rows = [{"premise": f"p{i}", "answer": f"a{i}", "label": ["cause", "effect"][i % 2]} for i in range(4)]
    for split in range(5):
        (folder / f"train_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.setattr(many, "licl_training_tasks", lambda: ["copa"])
    examples = many.licl_pairs(tmp_path)
    assert len(examples) == 4 and examples[0].query == "Sentence 1: p0\nSentence 2: a0"
    assert examples[0].instructions == training_instructions("licl/copa")


@needs_data
def test_multitask_mixes_many_tasks_and_wordings_none_held_out() -> None:
    from promptembedder.data.licl import load_licl
    from promptembedder.data.sources import MULTITASK_CAP, SOURCES
    from promptembedder.data.task_sets import load_agnews, load_esnli_pairs, load_sst2

    examples = SOURCES["multitask"]("minilm-l6")
    tasks = {e.instructions for e in examples}
    wordings = {w for e in examples for w in e.instructions}
    assert len(tasks) >= 20 and len(wordings) >= 60
    assert all(sum(e.instructions == t for e in examples) <= MULTITASK_CAP for t in tasks)
    held_out = {w for task in catalogue().train for w in held_out_instructions(task)}
    assert not wordings & held_out
    # SciFact's abstracts are read as evaluation reads retrieval's documents; every other task is symmetric
    scifact = set(training_instructions("scifact"))
    assert {e.document_prompt_type for e in examples if e.instruction in scifact} == {"document"}
    assert {e.document_prompt_type for e in examples if e.instruction not in scifact} == {"query"}
    assert wordings <= {w for words in catalogue().train.values() for w in words}
    nli = {*training_instructions("nli-entailment"), *training_instructions("nli-contradiction")}
    assert not {e.query for e in examples if e.instruction in nli} & {p.premise for p in load_esnli_pairs("test")}
    queries = {e.query for e in examples} | {e.positive for e in examples}
    for task in unseen_tasks():
        if task.startswith("licl/"):
            assert not queries & set(load_licl(task.removeprefix("licl/"), "train").texts), task
    texts = queries | {n for e in examples for n in e.negatives}
    for evaluation in (load_sst2("dev"), load_sst2("test"), load_agnews("test")):  # evaluation sets stay unseen
        assert not texts & set(evaluation.texts)


@needs_data
@pytest.mark.usefixtures("one_thread")
def test_train_multitask_end_to_end_on_tiny_models(tiny_model_dir, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from promptembedder.cli import app

    prompting = tmp_path / "llama"  # the tiny P with a context of 512 (not 128): the longest licl wordings fit
    shutil.copytree(tiny_model_dir("llama"), prompting)
    settings = json.loads((prompting / "config.json").read_text())
    (prompting / "config.json").write_text(json.dumps({**settings, "max_position_embeddings": 512}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "prompting_model": str(prompting), "embedding_model": str(tiny_model_dir("bert")),
        "train_data": ["multitask"], "batch_size": 4, "max_length": 32, "do_eval": False, "device": "cpu",
        "show_progress_bar": False}))
    result = CliRunner().invoke(app, ["train", str(config), "--max-steps", "3", "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 3
    assert len(summary["instructions"]["prompts"]) == 20  # the report's limit: training saw >= 60 wordings


def test_label_documents_take_the_label_name_and_another_as_negative() -> None:
    examples = many.label_documents(["good", "bad", "fine"], ["positive", "negative", "positive"], "sst2")
    assert [(e.query, e.positive, e.negatives) for e in examples] == [
        ("good", "positive", ("negative",)), ("bad", "negative", ("positive",)), ("fine", "positive", ("negative",))]
    assert many.label_documents(["a", "b"], ["x", "x"], "sst2") == []
