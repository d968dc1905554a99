"""Bad training input fails early and clearly (bad data files, bad config values, bad config files), and the
training config's settings reach the model configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer_helpers import INSTRUCTION, TinyDir, make_config, paraphrase_examples

import promptembedder.training.trainer as trainer_mod
from promptembedder.data.datasets import DataError
from promptembedder.data.sources import load_training_data
from promptembedder.training import DEFAULT_LR, Trainer, TrainingConfig

pytestmark = pytest.mark.usefixtures("one_thread", "dev_pairs")


# ---------------------------------------------------------------------------------------------------
# Bad input fails early and clearly
# ---------------------------------------------------------------------------------------------------

GOOD_LINE = json.dumps({"query": "a man eats", "positive": "a man is eating"})


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"query": "a man eats", "positive": ', "malformed JSON"),
        (json.dumps({"query": "a man eats"}), "missing column 'positive'"),
        (json.dumps({"query": "a man eats", "positive": "   "}), "empty"),
    ],
)
def test_bad_training_file_raises_before_any_model_is_built(
    bad_line: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_file = tmp_path / "train.jsonl"
    bad_file.write_text("\n".join([GOOD_LINE, GOOD_LINE, bad_line, GOOD_LINE]) + "\n")

    with pytest.raises(DataError) as info:
        load_training_data([{"path": str(bad_file)}])
    assert info.value.path == bad_file and info.value.line == 3 and reason in info.value.reason

    built = []
    monkeypatch.setattr(trainer_mod, "build_model", lambda *a, **k: built.append(1))
    config = TrainingConfig(train_data=[str(bad_file)], output_dir=str(tmp_path / "out"), device="cpu",
                            prompting_model="no-such-model", embedding_model="no-such-model")
    with pytest.raises(DataError, match=rf"{bad_file.name}:3: .*{reason}"):
        Trainer(config)
    assert not built


def test_skip_invalid_drops_bad_lines(tmp_path: Path) -> None:
    bad_file = tmp_path / "train.jsonl"
    bad_file.write_text("\n".join([GOOD_LINE, "{oops", GOOD_LINE]) + "\n")
    with pytest.warns(UserWarning, match="skipped 1 invalid line"):
        examples = load_training_data([{"path": str(bad_file), "instruction": INSTRUCTION}], skip_invalid=True)
    assert len(examples) == 2 and all(e.instruction == INSTRUCTION for e in examples)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"method": "magic"}, "method"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"grad_cache_chunk_size": 0}, "grad_cache_chunk_size"),
        ({"method": "lora", "fsdp": "full_shard"}, "fsdp shards the prompting model"),
        ({"fsdp": True}, "fsdp must be one of"),
        ({"hard": True, "gumbel_noise": False}, "no gradient to P"),
    ],
)
def test_invalid_config_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**overrides)


def test_batch_larger_than_any_data_set_is_an_error(tiny_model_dir: TinyDir, tmp_path: Path) -> None:
    config = make_config(tmp_path, tiny_model_dir("llama"), tiny_model_dir("bert"), batch_size=9)
    with pytest.raises(ValueError, match="full batch"):
        Trainer(config, examples=paraphrase_examples()).train()


def test_config_file_unknown_key_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("method: lora\nbatch_size: 8\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"train\.yaml.*learning_rat"):
        TrainingConfig.from_file(path)
    (tmp_path / "list.yaml").write_text("- method\n")
    with pytest.raises(ValueError, match=r"list\.yaml"):
        TrainingConfig.from_file(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("method: [lora\n")
    with pytest.raises(ValueError, match=r"broken\.yaml"):
        TrainingConfig.from_file(tmp_path / "broken.yaml")


def test_config_file_values_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("method: lora\nbatch_size: 8\nmax_steps: 30\ntrain_data:\n  - snli\n  - path: x.jsonl\n")
    config = TrainingConfig.from_file(path)
    assert (config.method, config.batch_size, config.max_steps) == ("lora", 8, 30)
    assert config.train_data == ["snli", {"path": "x.jsonl"}]
    assert config.lr == DEFAULT_LR["lora"]
    config = TrainingConfig.from_file(path, batch_size=16, max_steps=None, learning_rate=0.5)
    assert (config.method, config.batch_size, config.max_steps, config.lr) == ("lora", 16, 30, 0.5)
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig.from_file(path, batch_size=0)
    json_path = tmp_path / "train.json"
    json_path.write_text(json.dumps({"method": "prompt-tuning", "seed": 7}))
    assert TrainingConfig.from_file(json_path).seed == 7


# ---------------------------------------------------------------------------------------------------
# Every model setting is a training setting
# ---------------------------------------------------------------------------------------------------


def test_every_model_setting_is_a_training_setting_or_model_only(tmp_path: Path) -> None:
    """The model configs take the run's settings by name: a new model field is a TrainingConfig field too, or it
    is deliberately left at its default (MODEL_ONLY); and the derived configs carry the run's values."""
    from dataclasses import fields

    from promptembedder.models.config import BaselineConfig, PromptEmbedderConfig
    from promptembedder.training.config import MODEL_ONLY, RENAMED

    settings = {f.name for f in fields(TrainingConfig)}
    for target in (PromptEmbedderConfig, BaselineConfig):
        missing = {f.name for f in fields(target)} - MODEL_ONLY - settings - set(RENAMED)
        assert not missing, f"{target.__name__} fields neither in TrainingConfig nor MODEL_ONLY: {sorted(missing)}"
    config = TrainingConfig(num_soft_tokens=3, tau_start=2.0, prompt_on="query", max_length=64, lora_rank=4,
                            gumbel_noise=False, output_dir=str(tmp_path))
    derived = config.model_config
    assert (derived.num_soft_tokens, derived.tau, derived.prompt_on, derived.max_length, derived.lora_rank,
            derived.gumbel_noise) == (3, 2.0, "query", 64, 4, False)
    lora = TrainingConfig(method="lora", prompt_position="suffix", output_dir=str(tmp_path)).model_config
    assert isinstance(lora, BaselineConfig) and lora.adapter == "lora" and lora.prompt_position == "suffix"
