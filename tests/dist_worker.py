"""One rank of a small distributed training run, for tests/test_distributed.py.

Launched as ``python -m torch.distributed.run --nproc-per-node 2 tests/dist_worker.py OUT P E [DATASET [VARIANT
[STOP_AT [RESUME]]]]`` (gloo on CPU); the Trainer joins the process group itself from the env vars torchrun sets.
VARIANT names config changes (`VARIANTS`: GradCache, FSDP, LoRA); STOP_AT > 0 interrupts the run after that
step as Ctrl-C would; RESUME=1 continues from the run's checkpoint. Each rank writes to OUT:

- ``rank{r}.json``: the loss of every step, how often it wrote files, rank and world size, and how many of the
  trainable parameters' elements this rank holds (all of them under DDP, its shard under FSDP);
- ``rank{r}_initial.safetensors`` / ``rank{r}_final.safetensors``: trainable weights before / after training.

The run's own output folder, shared by the ranks as in real use, is ``OUT/run``. The parent test imports
``examples`` and ``make_config`` from here to train the same model single-process on the global batch.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

import promptembedder.models.backbone as backbone_mod
import promptembedder.models.prompt_embedder as model_mod
import promptembedder.training.checkpoint as checkpoint_mod
import promptembedder.training.dev_evaluation as dev_evaluation_mod
import promptembedder.training.distributed as dist_utils
from promptembedder.data.datasets import STSPair, TrainExample
from promptembedder.training import Trainer, TrainingConfig

INSTRUCTION = "Retrieve semantically similar text."
NLI = "Given a premise, retrieve a hypothesis that is entailed by the premise."
STEPS = 3
BATCH_PER_RANK = 4
COLLECTIVE_TIMEOUT_S = 15

SENTENCES = [
    "A man is eating food.", "A man eats a meal.", "A woman is riding a white horse.", "A lady rides a horse.",
    "A monkey is playing drums.", "A gorilla plays the drums.", "The children are listening to music.",
    "Kids hear songs in the park.", "It was raining heavily at the station.", "Heavy rain fell at the station.",
    "The stock market fell sharply.", "Stocks dropped a lot.", "A person is slicing an onion.",
    "Someone cuts an onion.", "The dog is chasing a ball.", "A dog runs after a ball.",
]
DEV_PAIRS = [STSPair(SENTENCES[i], SENTENCES[i + 1], 4.0 + (i % 3) / 2) for i in range(0, 16, 2)] + [
    STSPair(SENTENCES[i], SENTENCES[(i + 5) % 16], (i % 4) / 2) for i in range(0, 16, 2)
]


def examples() -> list[TrainExample]:
    """Two instructions (each batch holds one), one of them with a hard negative per example, the other's positives
    read as retrieval's documents (under the default instruction, not the batch's): 8 + 8 examples."""
    pairs = [(SENTENCES[i], SENTENCES[i + 1]) for i in range(0, 16, 2)]
    data = [TrainExample(q, p, (SENTENCES[(2 * i + 4) % 16],), NLI) for i, (q, p) in enumerate(pairs)]
    data += [TrainExample(p, q, (), INSTRUCTION, document_prompt_type="document") for q, p in pairs]
    return data


def uneven_negatives_examples() -> list[TrainExample]:
    """One instruction, a hard negative on one example only: every global batch leaves one rank with none."""
    pairs = [(SENTENCES[i], SENTENCES[i + 1]) for i in range(0, 16, 2)]
    return [TrainExample(q, p, (SENTENCES[5],) if i == 0 else (), INSTRUCTION) for i, (q, p) in enumerate(pairs)]


DATASETS = {"default": examples, "uneven-negatives": uneven_negatives_examples}
# Config changes per variant. Each is compared with plain single-process training on the global batch.
VARIANTS: dict[str, dict] = {
    "ddp": {},
    "grad-cache": {"grad_cache_chunk_size": 3},
    "accumulate": {"gradient_accumulation_steps": 2, "batch_size": 2},  # 2 micro-batches of 2 per rank a step
    "fsdp": {"fsdp": "full_shard"},
    "fsdp-grad-cache": {"fsdp": "shard_grad_op", "grad_cache_chunk_size": 3},
    "fsdp-lora-p": {"fsdp": "full_shard", "prompting_trainable": "lora"},
    # The prompt-diversity term generates the other instruction's prompt in the same forward of P and W.
    "ddp-diversity": {"prompt_diversity": 1.0},
    "fsdp-diversity-grad-cache": {"fsdp": "full_shard", "grad_cache_chunk_size": 3, "prompt_diversity": 1.0},
    "lora-grad-cache": {"method": "lora", "grad_cache_chunk_size": 3, "learning_rate": 1e-2},
    # E checkpointed inside DDP (the LoRA baseline is wrapped whole), with GradCache's second pass recomputing it.
    "lora-checkpointing": {"method": "lora", "grad_cache_chunk_size": 3, "learning_rate": 1e-3,
                           "gradient_checkpointing": True},
    # A decoder E reading a suffix prompt (EMBEDDING_OF): the texts once without a graph, the prompt positions with
    # one, queries and documents; the reference takes the full forward.
    "ddp-read-once": {},
    "fsdp-grad-cache-read-once": {"fsdp": "shard_grad_op", "grad_cache_chunk_size": 3},
}
#: E's tiny model kind per variant (bert otherwise).
EMBEDDING_OF = {"ddp-read-once": "gemma3", "fsdp-grad-cache-read-once": "gemma3"}


def make_config(prompting: str, embedding: str, output_dir: str, batch_size: int, **changes) -> TrainingConfig:
    config = dict(
        method="promptembedder",
        prompting_model=prompting,
        embedding_model=embedding,
        output_dir=output_dir,
        device="cpu",
        show_progress_bar=False,
        max_steps=STEPS,
        batch_size=batch_size,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        logging_steps=1,
        eval_steps=1000,
        save_steps=2,
        eval_max_pairs=200,
        hard=False,
        seed=0,
    )
    return TrainingConfig(**{**config, **changes})


def no_dropout(model: torch.nn.Module) -> None:
    """Dropout draws depend on how a batch is chunked; off, GradCache and the plain step can agree exactly."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def patch_dev_pairs() -> None:
    """Evaluation is not under test here: a few synthetic pairs instead of the shared STS-B dev."""
    dev_evaluation_mod.load_sts = lambda split="test", root=None: list(DEV_PAIRS)


def trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole trainable weights (gathered on every rank from FSDP shards; a collective then)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, ignore_frozen_params=True))
    return {n: t.detach().cpu().contiguous().clone() for n, t in state.items()}


def local_elements(model: torch.nn.Module) -> int:
    """Elements of the trainable parameters this rank stores: its shard of each FSDP DTensor, else all."""
    params = [p for p in model.parameters() if p.requires_grad]
    return sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)


def record_losses(trainer: Trainer) -> list[float]:
    """Wrap the loss (one call per micro-batch, plain or GradCache): the loss the step optimises, InfoNCE and any
    prompt-diversity term."""
    losses: list[float] = []
    original = trainer.loss

    def loss(*args):
        value = original(*args)
        losses.append(value.item())
        return value

    trainer.loss = loss
    return losses


def count_read_once() -> list[int]:
    """A list that gets an item per call of E's read-once path (backbone.EmbeddingBackbone._read_once)."""
    calls: list[int] = []
    original = backbone_mod.EmbeddingBackbone._read_once

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    backbone_mod.EmbeddingBackbone._read_once = counted
    return calls


def stop_after(step: int):
    """A callback that interrupts the run after `step` as Ctrl-C would (the trainer checkpoints and returns)."""
    def callback(args, state, control) -> None:
        if state.global_step == step:
            raise KeyboardInterrupt

    return callback


def main(out: str, prompting: str, embedding: str, dataset: str = "default", variant: str = "ddp",
         stop_at: str = "0", resume: str = "0") -> None:
    torch.set_num_threads(1)
    if dataset != "default":
        # Fail within seconds, not the default 30 minutes, if the ranks' collectives stop matching.
        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    patch_dev_pairs()
    writes: list[str] = []
    for module in (checkpoint_mod, model_mod):  # every safetensors file a rank writes goes through these
        original_save = module.save_file

        def spy(tensors, filename, *args, _original=original_save, **kwargs):
            writes.append(str(filename))
            return _original(tensors, filename, *args, **kwargs)

        module.save_file = spy

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    changes = dict(VARIANTS[variant])
    per_rank = changes.pop("batch_size", BATCH_PER_RANK)
    config = make_config(prompting, embedding, str(out_dir / "run"), per_rank, resume=resume == "1", **changes)
    callbacks = [stop_after(int(stop_at))] if int(stop_at) else []
    trainer = Trainer(config, examples=DATASETS[dataset](), callbacks=callbacks)
    no_dropout(trainer.model)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    save_file(trainable(trainer.model), out_dir / f"rank{rank}_initial.safetensors")
    losses = record_losses(trainer)
    read_once_calls = count_read_once()
    result = trainer.train()
    save_file(trainable(trainer.model), out_dir / f"rank{rank}_final.safetensors")
    report = {
        "rank": rank,
        "world_size": world,
        "distributed": trainer.distributed,
        "env_rank": int(os.environ.get("RANK", "-1")),
        "losses": losses,
        "steps": result.steps,
        "interrupted": result.interrupted,
        "writes": writes,
        "local_elements": local_elements(trainer.model),
        "total_elements": result.trainable_parameters,
        "read_once_calls": len(read_once_calls),
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report, indent=2))
    del trainer  # DDP holds the process group: it goes first (see distributed.shutdown)
    dist_utils.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:8])
