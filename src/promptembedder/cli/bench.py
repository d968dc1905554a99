"""`demo` and `bench ...`: the paper's claims at small scale, speed, memory and time to quality."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import USER_ERRORS, Opt, app, bench_app, console, fail


@app.command()
def demo(
    quick: Annotated[bool, Opt("--quick", help="a smaller budget: 8 steps, two tasks, smaller instruction tests "
                                                 "(about 15 minutes)")] = False,
    output_dir: Annotated[Path, Opt()] = Path("runs/demo"),
    prompting_model: Annotated[str | None, Opt(help="P [default: smollm2-135m]")] = None,
    embedding_model: Annotated[str | None, Opt(help="the frozen E [default: gemma3-270m]")] = None,
    transfer_model: Annotated[str | None, Opt(help="E' of the transfer step [default: smollm2-135m]")] = None,
    steps: Annotated[int | None, Opt(help="training steps per method on E (overrides the preset)")] = None,
    transfer_only: Annotated[bool, Opt("--transfer-only", help="only the transfer stage, to --transfer-model, "
                                                                "from the P a finished demo in --output-dir trained")]
    = False,
) -> None:
    """The paper's regime at small scale: baselines, PromptEmbedder, LoRA, transfer; one table and plots."""
    from ..bench.demo import DemoConfig, run_demo

    models = {"prompting_model": prompting_model, "embedding_model": embedding_model, "transfer_model": transfer_model}
    config = DemoConfig.preset(quick, output_dir=str(output_dir), transfer_only=transfer_only,
                               **{k: v for k, v in models.items() if v})
    if steps is not None:
        config.steps = steps
    try:
        run_demo(config, console)
    except USER_ERRORS as err:
        fail(str(err))


@bench_app.command("train")
def bench_train(
    embedding_model: Annotated[str, Opt()] = "minilm-l6",
    prompting_model: Annotated[str, Opt()] = "gemma3-270m",
    batch_size: Annotated[int, Opt()] = 32,
    seq_len: Annotated[int, Opt(help="tokens per text")] = 64,
    steps: Annotated[int, Opt()] = 10,
    methods: Annotated[str, Opt()] = "promptembedder-query,promptembedder-both,lora,prompt-tuning,full",
    rounds: Annotated[int, Opt(help="interleaved rounds (machine drift hits all methods alike)")] = 1,
    lora_rank: Annotated[int, Opt()] = 8,
    output_dir: Annotated[Path, Opt()] = Path("runs/bench"),
    device: Annotated[str | None, Opt()] = None,
    nproc_per_node: Annotated[int, Opt(help="processes per method, under torchrun (batch size is per process)")] = 1,
    grad_cache_chunk_size: Annotated[int | None, Opt(help="GradCache chunk for every method")] = None,
    gradient_checkpointing: Annotated[bool, Opt("--gradient-checkpointing", help="recompute E's activations")] = False,
    doc_cache: Annotated[str, Opt(help="cold | warm: documents cached before timing (steady state of later epochs; "
                                       "methods with a frozen document side)")] = "cold",
) -> None:
    """Step time, examples/s and peak memory of each method, each in its own process, with ratios to LoRA.

    Methods: promptembedder-query, promptembedder-both, lora, prompt-tuning, full, the two PromptEmbedder ones with
    E's full forward instead of reading each text once (promptembedder-query-no-read-once,
    promptembedder-both-no-read-once), and (with --nproc-per-node 2 or more) promptembedder-fsdp,
    promptembedder-fsdp-grad-op."""
    from ..bench.training import bench_train as run

    try:
        run(embedding_model=embedding_model, prompting_model=prompting_model, batch_size=batch_size,
            seq_len=seq_len, steps=steps, methods=methods.split(","), rounds=rounds, lora_rank=lora_rank,
            output_dir=output_dir, device=device, console=console, nproc_per_node=nproc_per_node,
            grad_cache_chunk_size=grad_cache_chunk_size, gradient_checkpointing=gradient_checkpointing,
            doc_cache=doc_cache)
    except ValueError as err:
        fail(str(err))


@bench_app.command("sweep")
def bench_sweep(
    embedding_model: Annotated[str, Opt()] = "arch:mistral-7b",
    prompting_model: Annotated[str, Opt()] = "arch:qwen2.5-0.5b",
    methods: Annotated[str, Opt(help="bench methods, each optionally with '+gc' (E checkpointed)")]
    = "lora,promptembedder-query",
    configs: Annotated[str, Opt(help="batch sizes, ':chunk' for GradCache, e.g. 8,16,32,32:8,64:16")]
    = "8,16,32,32:8,64:16",
    seq_len: Annotated[int, Opt(help="tokens per text")] = 128,
    warmup: Annotated[int, Opt()] = 2,
    steps: Annotated[int, Opt(help="timed steps per configuration")] = 5,
    lora_rank: Annotated[int, Opt()] = 8,
    profile: Annotated[bool, Opt("--profile/--no-profile", help="phase timings and a torch.profiler table")] = True,
    output_dir: Annotated[Path, Opt()] = Path("runs/sweep"),
    device: Annotated[str | None, Opt()] = None,
) -> None:
    """Several batch / GradCache configurations per method, one process per method (a 7B E is built once), with
    the steady state of cached documents, phase timings and a profile; writes sweep.json and sweep.md."""
    from ..bench.sweep import parse_configs, run_sweep

    try:
        report = run_sweep(embedding_model=embedding_model, prompting_model=prompting_model,
                           methods=methods.split(","), configs=parse_configs(configs), seq_len=seq_len, warmup=warmup,
                           steps=steps, lora_rank=lora_rank, output_dir=output_dir, device=device, profile=profile)
    except ValueError as err:
        fail(str(err))
    from ..bench.sweep_report import sweep_markdown

    console.print(f"written: {output_dir / 'sweep.json'}, {output_dir / 'sweep.md'}")
    print(sweep_markdown(report))
    if report["failures"]:
        raise typer.Exit(1)


@bench_app.command("encode")
def bench_encode(
    model: Annotated[str | None, Opt(help="saved PromptEmbedder (default: a fresh one)")] = None,
    embedding_model: Annotated[str, Opt()] = "minilm-l6",
    prompting_model: Annotated[str, Opt()] = "gemma3-270m",
    num_texts: Annotated[int, Opt()] = 512,
    batch_size: Annotated[int, Opt()] = 64,
    output_dir: Annotated[Path, Opt()] = Path("runs/bench"),
    device: Annotated[str | None, Opt()] = None,
) -> None:
    """Encode throughput: PromptEmbedder vs the bare backbone vs sentence-transformers (where installed)."""
    from ..bench.training import bench_encode as run

    run(model=model, embedding_model=embedding_model, prompting_model=prompting_model, num_texts=num_texts,
        batch_size=batch_size, output_dir=output_dir, device=device, console=console)


@bench_app.command("converge")
def bench_converge(
    target_score: Annotated[float, Opt(help="STS-B dev Spearman x100 to reach")] = 84.0,
    embedding_model: Annotated[str, Opt()] = "minilm-l6",
    prompting_model: Annotated[str, Opt()] = "gemma3-270m",
    transfer_from: Annotated[str | None, Opt(help="trained PromptEmbedder: also time transfer to --transfer-model")]
    = None,
    transfer_model: Annotated[str, Opt()] = "gemma3-270m",
    max_steps: Annotated[int, Opt()] = 200,
    eval_steps: Annotated[int, Opt()] = 20,
    batch_size: Annotated[int, Opt()] = 32,
    output_dir: Annotated[Path, Opt()] = Path("runs/bench"),
    device: Annotated[str | None, Opt()] = None,
) -> None:
    """Time (and steps) to a target dev score: promptembedder vs lora, and transfer (new W only) vs lora."""
    from ..bench.training import bench_converge as run

    run(target_score=target_score, embedding_model=embedding_model, prompting_model=prompting_model,
        transfer_from=transfer_from, transfer_model=transfer_model, max_steps=max_steps, eval_steps=eval_steps,
        batch_size=batch_size, output_dir=output_dir, device=device, console=console)


@bench_app.command("serve")
def bench_serve(
    model: Annotated[str | None, Opt(help="saved PromptEmbedder (default: a fresh one of P and E)")] = None,
    embedding_model: Annotated[str, Opt()] = "minilm-l6",
    prompting_model: Annotated[str, Opt()] = "gemma3-270m",
    concurrency: Annotated[str, Opt(help="comma-separated client counts")] = "1,8,32",
    requests_per_client: Annotated[int, Opt()] = 20,
    max_batch_size: Annotated[int, Opt()] = 64,
    max_wait_ms: Annotated[float, Opt()] = 5.0,
    threads: Annotated[int | None, Opt(help="torch threads in each process (default: torch's)")] = None,
    output_dir: Annotated[Path, Opt()] = Path("runs/bench"),
) -> None:
    """Server throughput and p50/p99 latency at several concurrencies: vs encode in-process, vs batching off,
    vs the bare backbone served the same way."""
    from ..bench.serving import bench_serve as run

    run(model=model, embedding_model=embedding_model, prompting_model=prompting_model,
        concurrencies=[int(c) for c in concurrency.split(",")], requests_per_client=requests_per_client,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, threads=threads, output_dir=output_dir,
        console=console)
