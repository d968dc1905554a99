"""`train` and `transfer`: contrastive training of PromptEmbedder or a baseline, and moving a trained P."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .app import USER_ERRORS, Opt, app, console, fail, finish_training

#: TrainingConfig settings only a config file sets (the command line keeps to the common ones). A test checks that
#: every setting is a `train` option or listed here, so a new setting is never forgotten in one of the two.
FILE_ONLY = frozenset({
    "bf16", "do_eval", "eval_max_pairs", "gather_across_ranks", "init_from", "logging_steps", "lora_alpha", "lora_rank",
    "lr_scheduler", "max_grad_norm", "max_length", "prompting_trainable", "save_model", "show_progress_bar",
    "stop_at_target", "symmetric", "target_score", "warmup_ratio", "weight_decay",
})


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML/JSON training config; flags override it.")] = None,
    method: Annotated[str | None, Opt(help="promptembedder | lora | prompt-tuning | prompt-table | full")] = None,
    prompting_model: Annotated[str | None, Opt(help="P: HF causal LM id, path or named default")] = None,
    embedding_model: Annotated[str | None, Opt(help="E: HF model id, path or named default")] = None,
    train_data: Annotated[list[str] | None, Opt(help="all | multitask | multitask-labels | esnli | sts-train | "
                                                     "scifact-train | banking77-train | mrpc-train | snli | "
                                                     "nli-contrastive | esnli-contrastive | mnli | cad-nli | quora | "
                                                     "scitail | trec-train | sst2-train | agnews | licl | "
                                                     "licl-labels | a .jsonl/.csv/.tsv file (repeatable)")]
    = None,
    task_weights: Annotated[str | None, Opt(help="mix sources by weight, e.g. esnli=1,scifact-train=2 "
                                                 "(default: by size)")] = None,
    eval_task: Annotated[str | None, Opt(help="select checkpoints on this task's dev split: sts-b | scifact")]
    = None,
    output_dir: Annotated[str | None, Opt()] = None,
    num_soft_tokens: Annotated[int | None, Opt()] = None,
    prompt_on: Annotated[str | None, Opt(help="query | both")] = None,
    prompt_position: Annotated[str | None, Opt(
        help="soft prompt in E: auto | prefix | suffix | both | deep (every layer's keys/values; decoders)")] = None,
    pooling: Annotated[str | None, Opt(help="mean | last | cls")] = None,
    max_steps: Annotated[int | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    gradient_accumulation_steps: Annotated[int | None, Opt()] = None,
    learning_rate: Annotated[float | None, Opt()] = None,
    alignment_learning_rate: Annotated[float | None, Opt()] = None,
    train_alignment: Annotated[bool | None, Opt("--train-alignment/--freeze-alignment",
                                                help="freeze W at its least-squares start: P alone steers E, "
                                                     "and that is what a transfer keeps")] = None,
    tau_start: Annotated[float | None, Opt()] = None,
    tau_end: Annotated[float | None, Opt()] = None,
    hard: Annotated[bool | None, Opt("--hard/--soft", help="straight-through hard Gumbel sample")] = None,
    gumbel_noise: Annotated[bool | None, Opt("--gumbel-noise/--no-gumbel-noise",
                                             help="no noise: P's soft tokens in training are those of inference "
                                                  "(the softmax's expectation)")] = None,
    temperature: Annotated[float | None, Opt(help="InfoNCE temperature")] = None,
    prompt_diversity: Annotated[float | None, Opt(help="weight of a term keeping P's prompts for different "
                                                       "instructions apart (0: off)")] = None,
    eval_steps: Annotated[int | None, Opt()] = None,
    eval_on_start: Annotated[bool | None, Opt("--eval-on-start", help="also score dev at step 0, before training")]
    = None,
    save_steps: Annotated[int | None, Opt()] = None,
    seed: Annotated[int | None, Opt()] = None,
    device: Annotated[str | None, Opt()] = None,
    skip_invalid: Annotated[bool | None, Opt("--skip-invalid", help="skip bad data lines (count printed)")] = None,
    resume: Annotated[bool | None, Opt("--resume", help="continue from output_dir/checkpoint")] = None,
    overwrite: Annotated[bool | None, Opt("--overwrite", help="replace the run already in output_dir")] = None,
    grad_cache_chunk_size: Annotated[int | None, Opt(help="GradCache: texts per chunk (memory of one chunk)")] = None,
    fsdp: Annotated[str | None, Opt(help="under torchrun, shard P and W (FSDP2): full_shard | shard_grad_op")] = None,
    gradient_checkpointing: Annotated[bool | None, Opt("--gradient-checkpointing",
                                                       help="recompute E's activations in backward")] = None,
    read_once: Annotated[bool | None, Opt("--read-once/--no-read-once",
                                          help="suffix prompt on a decoder E: read the text once without a graph, "
                                               "back-propagate through the prompt positions only (default on)")]
    = None,
) -> None:
    """Train PromptEmbedder or a baseline contrastively (works under torchrun / accelerate launch)."""
    overrides = {k: v for k, v in locals().items() if k != "config" and v is not None}
    from ..models.architectures import refuse
    from ..training import Trainer, TrainingConfig

    try:
        cfg = TrainingConfig.from_file(config, **overrides) if config else TrainingConfig(**overrides)
        refuse([cfg.prompting_model if cfg.method == "promptembedder" else None, cfg.embedding_model, cfg.init_from],
               "train")
        result = Trainer(cfg).train()
    except USER_ERRORS as err:
        fail(str(err))
    finish_training(result)
    from ..training import distributed

    if distributed.is_main_process():
        console.print_json(json.dumps(result.__dict__))
    distributed.shutdown()


@app.command()
def transfer(
    from_: Annotated[Path, Opt("--from", help="a saved PromptEmbedder (its trained P is reused, frozen)")],
    embedding_model: Annotated[str, Opt(help="the new backbone E'")],
    output_dir: Annotated[str, Opt()] = "runs/transfer",
    target_score: Annotated[float | None, Opt(help="dev score x100 to reach (eval_task's main metric)")] = None,
    max_steps: Annotated[int, Opt()] = 200,
    batch_size: Annotated[int, Opt()] = 32,
    alignment_learning_rate: Annotated[float | None, Opt(help="W alone (default: the transfer preset, 1e-2)")] = None,
    eval_steps: Annotated[int, Opt()] = 25,
    eval_on_start: Annotated[bool, Opt("--eval-on-start/--no-eval-on-start",
                                       help="score the transferred start (least-squares W) at step 0")] = True,
    pooling: Annotated[str | None, Opt()] = None,
    prompt_position: Annotated[str, Opt(help="chosen afresh for E': auto | prefix | suffix | both | deep")] = "auto",
    train_data: Annotated[list[str] | None, Opt()] = None,
    device: Annotated[str | None, Opt()] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="replace the run already in output_dir")] = False,
) -> None:
    """Move a trained P to a new backbone by training only a new alignment W; prints steps and time to target."""
    from ..models.architectures import refuse
    from ..training import TRANSFER_ALIGNMENT_LR, Trainer, TrainingConfig

    try:
        refuse([from_, embedding_model], "transfer")
        w_lr = TRANSFER_ALIGNMENT_LR if alignment_learning_rate is None else alignment_learning_rate
        cfg = TrainingConfig(method="promptembedder", init_from=str(from_), embedding_model=embedding_model,
                             output_dir=output_dir, target_score=target_score, max_steps=max_steps,
                             batch_size=batch_size, alignment_learning_rate=w_lr,
                             eval_steps=eval_steps, eval_on_start=eval_on_start, pooling=pooling,
                             prompt_position=prompt_position, device=device,
                             overwrite=overwrite, train_data=train_data or ["snli", "sts-train"])
        result = Trainer(cfg).train()
    except USER_ERRORS as err:
        fail(str(err))
    finish_training(result)
    from ..training import distributed

    if distributed.is_main_process():
        console.print(f"steps: {result.steps}  wall time: {result.wall_time_s:.1f} s  "
                      f"best dev: {result.best_dev_score}")
        if target_score is not None:
            if result.steps_to_target is not None:
                console.print(f"reached {target_score} at step {result.steps_to_target} after "
                              f"{result.seconds_to_target:.1f} s")
            else:
                console.print(f"did not reach {target_score}")
    distributed.shutdown()
