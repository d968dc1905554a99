"""The instruction tests' seeded subsets (bench.subsets) on fixture files: the draws at the sizes asked, the wordings
chosen, errors that name the size; their scoring on a tiny static prompt (50) and a fake that follows (100); the
demo table's nli-follow and unseen-task columns and the budget its caption states."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict

import pytest
from rich.console import Console
from test_evaluation import HashingEmbedder
from test_instruction_evals import write_toy_licl

from promptembedder.bench import subsets
from promptembedder.bench.demo_config import DEMO_INSTRUCTION_SIZES, QUICK_INSTRUCTION_SIZES, DemoConfig
from promptembedder.bench.demo_table import LORA_FROM_SCRATCH, LORA_ON_E, Results, instruction_summary, results_table
from promptembedder.bench.subsets import InstructionSizes, instruction_subsets, score_instruction_suite
from promptembedder.data.datasets import DATA_ENV_VAR
from promptembedder.data.instructions import held_out_instructions, training_instructions
from promptembedder.evaluation.nli_follow import follow_items
from promptembedder.models.baselines import PromptTuningEmbedder
from promptembedder.models.config import BaselineConfig

pytestmark = pytest.mark.usefixtures("one_thread")

GROUPS = ("rec.autos", "sci.space", "talk.politics")
CONTRADICT = training_instructions("nli-contradiction")[0]


def sizes(**overrides) -> InstructionSizes:
    return InstructionSizes(**{"nli_items": 5, "licl_test": 5, "newsgroups_pool_per_label": 4, "newsgroups_test": 9,
                               "n_experiments": 2, "samples_per_label": 2, **overrides})


@pytest.fixture
def data(tmp_path, monkeypatch):
    """12 e-SNLI test premises, one licl task (two labels) and 20NG (three groups) as the only unseen tasks."""
    rows = ["idx,gold_label,Sentence1,Sentence2"]
    for i in range(12):
        premise = f"a dog number {i} runs in the park"
        rows += [f"{3 * i},neutral,{premise},a dog is happy", f"{3 * i + 1},entailment,{premise},a dog number {i} runs",
                 f"{3 * i + 2},contradiction,{premise},cats sleep indoors"]
    (tmp_path / "esnli").mkdir()
    (tmp_path / "esnli" / "esnli_test.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    write_toy_licl(tmp_path, lambda i, j: f"{['cold rain', 'warm sun'][j % 2]} {i}{j}",
                   [(f"{['cold rain', 'warm sun'][j % 2]} t{j}", ["no", "yes"][j % 2]) for j in range(30)])
    (tmp_path / "twentynewsgroups").mkdir()
    for split, n in (("train", 6), ("test", 5)):
        lines = ["label\tdoc_id\tsubject"] + [f"{g}\t{k}{j}\t{g.split('.')[1]} subject {j}"
                                              for k, g in enumerate(GROUPS) for j in range(n)]
        (tmp_path / "twentynewsgroups" / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    monkeypatch.setattr(subsets, "unseen_tasks", lambda: ("licl/toy", "twentynewsgroups"))
    instruction_subsets.cache_clear()
    yield tmp_path
    instruction_subsets.cache_clear()


def test_subsets_are_the_seeded_draws_at_the_sizes_asked(data) -> None:
    chosen = instruction_subsets(sizes(nli_wordings=("training",)))
    assert chosen.nli.items == random.Random(0).sample(follow_items("test"), 5)  # the draw run.py has always made
    assert dict(chosen.nli.wordings) == {"training": (training_instructions("nli-entailment")[0], CONTRADICT)}
    every = instruction_subsets(sizes())
    assert list(every.nli.wordings) == ["training", "held_out"]
    assert every.nli.wordings["held_out"][1] == held_out_instructions("nli-contradiction")[0]
    licl, newsgroups = every.unseen
    assert (licl.name, len(licl.data.train.texts), len(licl.data.test.texts)) == ("licl/toy", 20, 5)
    assert newsgroups.name == "twentynewsgroups" and len(newsgroups.data.test.texts) == 9
    assert Counter(newsgroups.data.train.labels) == dict.fromkeys(GROUPS, 4)
    assert instruction_subsets(sizes()) is every  # loaded once per sizes


def test_sizes_are_checked_with_their_names(data) -> None:
    with pytest.raises(ValueError, match="nli_items must be a positive integer"):
        sizes(nli_items=0)
    with pytest.raises(ValueError, match="licl_test must be a positive integer"):
        sizes(licl_test=True)
    with pytest.raises(ValueError, match="at least one wording"):
        sizes(nli_wordings=())
    assert sizes(nli_wordings=["training"]) == sizes(nli_wordings=("training",))  # as read back from JSON
    with pytest.raises(ValueError, match="nli_items=13: nli-follow has 12 premises"):
        instruction_subsets(sizes(nli_items=13))
    with pytest.raises(ValueError, match=r"unknown \['paraphrase'\].*'training', 'held_out'"):
        instruction_subsets(sizes(nli_wordings=("paraphrase",)))


class FollowingEmbedder(HashingEmbedder):
    """Bag of words whose query is negated under the contradiction instruction: it follows both directions."""

    def embed(self, texts, instruction=None, prompt_type="query", normalize=True):
        out = super().embed(texts, instruction, prompt_type, normalize)
        return -out if prompt_type == "query" and instruction == CONTRADICT else out


def test_scores_50_for_a_static_prompt_and_100_for_a_follower(data, tiny_model_dir) -> None:
    chosen = sizes(nli_wordings=("training",))
    static = PromptTuningEmbedder(BaselineConfig(method="prompt-tuning", embedding_model=str(tiny_model_dir("bert"))),
                                  device="cpu")
    scored = score_instruction_suite(static, chosen, batch_size=4, log=lambda _: None)
    nli = scored["nli_follow"]
    assert nli["paired_accuracy"] == 50.0 and nli["entailment"] + nli["contradiction"] == 100.0
    assert nli["num_items"] == 5 and set(nli["wordings"]) == {"training"}
    assert set(scored["unseen_tasks"]["per_task"]) == {"licl/toy", "twentynewsgroups"}
    assert set(scored["eval_s_per_task"]) == {"nli_follow", "unseen_tasks"}

    summary = instruction_summary(score_instruction_suite(FollowingEmbedder(), chosen, log=lambda _: None))
    assert (summary["nli_follow"], summary["entailment"], summary["contradiction"]) == (100.0, 100.0, 100.0)
    assert summary["unseen_tasks"] == pytest.approx(sum(summary["unseen_per_task"].values()) / 2)


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=200)  # noqa: SIM115


def test_demo_table_has_the_instruction_columns_and_states_its_budget() -> None:
    config = DemoConfig(tasks=("sts-b", "banking77"))
    results = Results(quiet())
    e, e2 = config.embedding_model, config.transfer_model
    results.scores = {"prompt tuning (static suffix)": {"sts-b": 40.0, "banking77": 30.0},
                      LORA_ON_E: {"sts-b": 50.0, "banking77": 40.0}, LORA_FROM_SCRATCH: {"sts-b": 20.0}}
    results.backbones = {"prompt tuning (static suffix)": e, LORA_ON_E: e, LORA_FROM_SCRATCH: e2}
    results.instructed = {
        "prompt tuning (static suffix)": {"nli_follow": 50.0, "entailment": 52.0, "contradiction": 48.0,
                                          "unseen_tasks": 41.25},
        LORA_ON_E: {"nli_follow": 55.0, "entailment": 90.0, "contradiction": 20.0, "unseen_tasks": 44.5}}
    table = results_table(results, config, config.tasks)
    columns = {column.header: list(column.cells) for column in table.columns}
    assert columns["nli-follow (ent/con)"] == ["50.0 (52.0/48.0)", "55.0 (90.0/20.0)", "-"]  # no transfer reading
    assert columns["unseen tasks"] == ["41.25", "44.50", "-"]
    assert columns["mean"] == ["35.00", "45.00", "20.00"]  # the six-task mean leaves the instruction tests out
    caption = str(table.caption)
    for words in ("20 steps x batch 8", "max length 48 tokens", "esnli, sts-train, banking77-train, mrpc-train",
                  "one seed (42)", "sts-b, banking77", "50 e-SNLI test premises, training wording",
                  "10 licl tasks x 10 test texts + 20NG 60", "probe 1 x 6 per label"):
        assert words in caption, words
    assert "20 steps x 8" in str(table.title)

    results.instructed = {}  # the transfer stage alone: no instruction columns, no sizes in the caption
    table = results_table(results, DemoConfig(transfer_only=True), ("sts-b",))
    assert "unseen tasks" not in [column.header for column in table.columns]
    assert "nli-follow" not in str(table.caption) and "transfer runs 10 steps" in str(table.caption)


def test_demo_sizes_quick_smaller_and_read_back_from_json() -> None:
    assert DemoConfig.preset(True).instruction_sizes == QUICK_INSTRUCTION_SIZES
    assert DemoConfig.preset(False).instruction_sizes == DEMO_INSTRUCTION_SIZES
    quick, full = asdict(QUICK_INSTRUCTION_SIZES), asdict(DEMO_INSTRUCTION_SIZES)
    assert all(quick[k] <= full[k] for k in full if k != "nli_wordings")
    back = DemoConfig(**json.loads(json.dumps(asdict(DemoConfig()))))
    assert back.instruction_sizes == DEMO_INSTRUCTION_SIZES
