"""The `promptembedder` command: a thin layer over the library API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from .cli_io import check_output_file, npy_path, read_texts

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Text embeddings from LLM-generated soft prompts.")
bench_app = typer.Typer(no_args_is_help=True, help="Measure speed, memory and time-to-quality against LoRA.")
app.add_typer(bench_app, name="bench")
console = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get whole tables

Opt = typer.Option
#: User errors: a one-line message and exit status 2 (the traceback with --debug).
USER_ERRORS = (ValueError, FileNotFoundError, OSError)
_state = {"debug": False}


@app.callback()
def _options(debug: Annotated[bool, Opt("--debug", help="show the Python traceback of an error")] = False) -> None:
    _state["debug"] = debug
    if not debug:  # warnings as one line each on stderr, without the source line Python prints
        import warnings

        errors = Console(stderr=True, soft_wrap=True)
        warnings.showwarning = lambda message, category, *args, **kwargs: errors.print(
            f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False)


def _fail(message: str) -> None:
    """Report a user error in one line; under --debug re-raise the exception being handled, traceback and all."""
    if _state["debug"] and sys.exc_info()[1] is not None:
        raise
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def _finish_training(result) -> None:
    """A run stopped by SIGINT/SIGTERM (checkpoint written) exits 130/143, so `train && evaluate` stops too."""
    from . import distributed

    if result.interrupted:
        if distributed.is_main_process():
            console.print(f"interrupted at step {result.steps}: checkpoint written; continue with --resume")
        distributed.shutdown()
        raise typer.Exit(128 + (result.stop_signal or 2))


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML/JSON training config; flags override it.")] = None,
    method: Annotated[str | None, Opt(help="promptembedder | lora | prompt-tuning | full")] = None,
    prompting_model: Annotated[str | None, Opt(help="P: HF causal LM id, path or named default")] = None,
    embedding_model: Annotated[str | None, Opt(help="E: HF model id, path or named default")] = None,
    train_data: Annotated[list[str] | None, Opt(help="all | esnli | sts-train | scifact-train | banking77-train | "
                                                     "mrpc-train | snli | a .jsonl/.csv/.tsv file (repeatable)")]
    = None,
    task_weights: Annotated[str | None, Opt(help="mix sources by weight, e.g. esnli=1,scifact-train=2 "
                                                 "(default: by size)")] = None,
    eval_task: Annotated[str | None, Opt(help="select checkpoints on this task's dev split: sts-b | scifact")]
    = None,
    output_dir: Annotated[str | None, Opt()] = None,
    num_soft_tokens: Annotated[int | None, Opt()] = None,
    prompt_on: Annotated[str | None, Opt(help="query | both")] = None,
    prompt_position: Annotated[str | None, Opt(help="soft prompt in E's input: auto | prefix | suffix | both")] = None,
    pooling: Annotated[str | None, Opt(help="mean | last | cls")] = None,
    max_steps: Annotated[int | None, Opt()] = None,
    batch_size: Annotated[int | None, Opt()] = None,
    gradient_accumulation_steps: Annotated[int | None, Opt()] = None,
    learning_rate: Annotated[float | None, Opt()] = None,
    alignment_learning_rate: Annotated[float | None, Opt()] = None,
    tau_start: Annotated[float | None, Opt()] = None,
    tau_end: Annotated[float | None, Opt()] = None,
    hard: Annotated[bool | None, Opt("--hard/--soft", help="straight-through hard Gumbel sample")] = None,
    temperature: Annotated[float | None, Opt(help="InfoNCE temperature")] = None,
    eval_steps: Annotated[int | None, Opt()] = None,
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
) -> None:
    """Train PromptEmbedder or a baseline contrastively (works under torchrun / accelerate launch)."""
    overrides = {k: v for k, v in locals().items() if k != "config" and v is not None}
    from .architectures import refuse
    from .trainer import Trainer, TrainingConfig

    try:
        cfg = TrainingConfig.from_file(config, **overrides) if config else TrainingConfig(**overrides)
        refuse([cfg.prompting_model if cfg.method == "promptembedder" else None, cfg.embedding_model, cfg.init_from],
               "train")
        result = Trainer(cfg).train()
    except USER_ERRORS as err:
        _fail(str(err))
    _finish_training(result)
    from . import distributed

    if distributed.is_main_process():
        console.print_json(json.dumps(result.__dict__))
    distributed.shutdown()


@app.command()
def transfer(
    from_: Annotated[Path, Opt("--from", help="a saved PromptEmbedder (its trained P is reused, frozen)")],
    embedding_model: Annotated[str, Opt(help="the new backbone E'")],
    output_dir: Annotated[str, Opt()] = "runs/transfer",
    target_score: Annotated[float | None, Opt(help="STS-B dev Spearman x100 to reach")] = None,
    max_steps: Annotated[int, Opt()] = 200,
    batch_size: Annotated[int, Opt()] = 32,
    alignment_learning_rate: Annotated[float, Opt(help="W alone: 1e-2 beat 1e-3 in the demo")] = 1e-2,
    eval_steps: Annotated[int, Opt()] = 25,
    pooling: Annotated[str | None, Opt()] = None,
    train_data: Annotated[list[str] | None, Opt()] = None,
    device: Annotated[str | None, Opt()] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="replace the run already in output_dir")] = False,
) -> None:
    """Move a trained P to a new backbone by training only a new alignment W; prints steps and time to target."""
    from .architectures import refuse
    from .trainer import Trainer, TrainingConfig

    try:
        refuse([from_, embedding_model], "transfer")
        cfg = TrainingConfig(method="promptembedder", init_from=str(from_), embedding_model=embedding_model,
                             output_dir=output_dir, target_score=target_score, max_steps=max_steps,
                             batch_size=batch_size, alignment_learning_rate=alignment_learning_rate,
                             eval_steps=eval_steps, pooling=pooling, device=device, overwrite=overwrite,
                             train_data=train_data or ["snli", "sts-train"])
        result = Trainer(cfg).train()
    except USER_ERRORS as err:
        _fail(str(err))
    _finish_training(result)
    from . import distributed

    if distributed.is_main_process():
        console.print(f"steps: {result.steps}  wall time: {result.wall_time_s:.1f} s  "
                      f"best dev: {result.best_dev_spearman}")
        if target_score is not None:
            if result.steps_to_target:
                console.print(f"reached {target_score} at step {result.steps_to_target} after "
                              f"{result.seconds_to_target:.1f} s")
            else:
                console.print(f"did not reach {target_score}")
    distributed.shutdown()


@app.command()
def evaluate(
    models: Annotated[list[str], typer.Argument(help="saved PromptEmbedder / baseline folders or HF backbones")],
    tasks: Annotated[str, Opt(help="all | sts | retrieval | classification | pair | clustering | task names, "
                                   "comma-separated (sts-b, sick-r, scifact, banking77, mrpc, twentynewsgroups)")]
    = "sts-b,sick-r",
    split: Annotated[str, Opt()] = "test",
    instruction: Annotated[str | None, Opt(help="one instruction for every task")] = None,
    instructions: Annotated[Path | None, Opt(help="JSON {task: instruction} overriding the defaults")] = None,
    no_instruction: Annotated[bool, Opt("--no-instruction", help="evaluate with no instruction")] = False,
    output: Annotated[Path | None, Opt(help="write results JSON here")] = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="replace an existing --output file")] = False,
    batch_size: Annotated[int, Opt()] = 64,
    max_length: Annotated[int | None, Opt(help="bare backbones: tokens per text (default: its ST config, or 512)")]
    = None,
    device: Annotated[str | None, Opt()] = None,
    force: Annotated[bool, Opt("--force", help="load a saved model whose manifest does not match (warns)")] = False,
) -> None:
    """Score models as MTEB does, one table per task type and an average per model; '*' marks in-domain tasks."""
    from . import evaluation as ev
    from .architectures import refuse
    from .auto import load_embedder

    try:
        refuse(models, "evaluate")
        names = ev.select_tasks(tasks)
        if output:
            ev.check_writable(output, overwrite)
        overrides = ev.load_instructions(instructions) if instructions else {}
        if instruction is not None or no_instruction:
            overrides = dict.fromkeys(names, None if no_instruction else instruction)
        results = {}
        for reference in models:
            embedder = load_embedder(reference, device=device, max_length=max_length, strict=not force)
            results[reference] = ev.evaluate(embedder, names, split, overrides, batch_size, show_progress_bar=True,
                                             in_domain=ev.in_domain_tasks(reference))
    except USER_ERRORS as err:
        _fail(str(err))
    for table in ev.results_tables(results):
        console.print(table)
    if output:
        ev.write_results(output, results)
        console.print(f"results written to {output}")


@app.command()
def encode(
    model: Annotated[str, typer.Argument(help="saved model folder or HF backbone")],
    input: Annotated[Path, Opt("--input", "-i", help="text file, one text per line ('-' for stdin)")],
    output: Annotated[Path, Opt("--output", "-o", help=".npy file for the (n, d) embeddings")],
    instruction: Annotated[str | None, Opt()] = None,
    prompt_type: Annotated[str, Opt(help="query | document")] = "query",
    batch_size: Annotated[int, Opt()] = 32,
    device: Annotated[str | None, Opt()] = None,
    force: Annotated[bool, Opt("--force", help="load a saved model whose manifest does not match (warns)")] = False,
) -> None:
    """Embed a file of texts (one per line) into a .npy matrix (numpy's naming: `-o x` writes x.npy)."""
    import numpy as np

    from .auto import load_embedder

    target = npy_path(output)
    try:  # the input and the output path first: a mistake there must not cost the whole encoding
        texts = read_texts(input)
        check_output_file(target, "--output")
    except ValueError as err:
        _fail(str(err))
    try:
        embedder = load_embedder(model, device=device, strict=not force)
        vectors = embedder.encode(texts, instruction=instruction, batch_size=batch_size, prompt_type=prompt_type,
                                  show_progress_bar=True)
    except (*USER_ERRORS, TypeError) as err:
        _fail(f"model {model}: {err}")
    np.save(target, vectors)
    console.print(f"{vectors.shape[0]} embeddings of dim {vectors.shape[1]} written to {target}")


@app.command("decode-prompt")
def decode_prompt(
    model: Annotated[str, typer.Argument(help="saved PromptEmbedder folder")],
    instruction: Annotated[list[str], Opt(help="instruction(s) to decode")],
    device: Annotated[str | None, Opt()] = None,
    force: Annotated[bool, Opt("--force", help="load a saved model whose manifest does not match (warns)")] = False,
) -> None:
    """Show the text each instruction's soft prompt is closest to."""
    from .model import PromptEmbedder
    from .validation import check_device

    try:
        check_device(device)
        embedder = PromptEmbedder.from_pretrained(model, device=device, strict=not force)
        if embedder.generator is None:
            raise ValueError(f"{model} has no soft prompt to decode (num_soft_tokens=0)")
        decoded = [(text, embedder.decode_prompt(text)) for text in instruction]
    except USER_ERRORS as err:
        _fail(f"model {model}: {err}")
    for text, prompt in decoded:
        console.print(f"{text!r} -> {prompt!r}")


@app.command("export")
def export_model(
    model: Annotated[Path, typer.Argument(help="saved PromptEmbedder folder")],
    out: Annotated[Path, typer.Argument(help="new folder: plain HF checkpoint of E + sentence-transformers config")],
    instructions: Annotated[Path | None, Opt(help="JSON {name: instruction}; each name becomes a prompt_name")] = None,
    tasks: Annotated[str | None, Opt(help="comma-separated tasks (sts-b, sick-r): their evaluation instructions")]
    = None,
    overwrite: Annotated[bool, Opt("--overwrite", help="replace OUT if it exists")] = False,
    verify: Annotated[bool, Opt("--verify/--no-verify", help="reload OUT and compare with encode")] = True,
) -> None:
    """Compile each instruction's soft prompt into K new tokens of E; P is not needed to use the result."""
    from .export import export, read_instructions, task_instructions

    try:
        chosen = read_instructions(instructions) if instructions else {}
        if tasks:
            chosen.update(task_instructions([t.strip() for t in tasks.split(",") if t.strip()]))
        path = export(model, out, chosen, overwrite=overwrite, verify=verify)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        _fail(str(err))
    names = ", ".join(chosen)
    console.print(f"exported to {path} (prompt_name: {names}); load with sentence_transformers.SentenceTransformer"
                  + (", trust_remote_code=True" if (path / "prompt_pooling.py").exists() else ""))


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="saved PromptEmbedder / baseline, exported folder or HF backbone")],
    host: Annotated[str, Opt()] = "127.0.0.1",
    port: Annotated[int, Opt()] = 8000,
    model_name: Annotated[str | None, Opt(help="the id clients pass as `model` (default: MODEL's folder name)")]
    = None,
    task: Annotated[str | None, Opt(help="default task when a request names none (e.g. sts-b)")] = None,
    instruction: Annotated[str | None, Opt(help="default instruction when a request names none")] = None,
    instructions: Annotated[Path | None, Opt(help="JSON {name: instruction}: more tasks clients may name")] = None,
    max_batch_size: Annotated[int, Opt(help="texts encoded together at most")] = 64,
    max_wait_ms: Annotated[float, Opt(help="how long a request waits for others to batch with")] = 5.0,
    max_queue: Annotated[int, Opt(help="texts waiting at most; beyond, 503")] = 4096,
    max_items: Annotated[int, Opt(help="texts per request at most; beyond, 400")] = 2048,
    max_body_mb: Annotated[float, Opt(help="request body size limit; beyond, 413")] = 8.0,
    device: Annotated[str | None, Opt()] = None,
) -> None:
    """An OpenAI-compatible embeddings server (POST /v1/embeddings) with dynamic batching; Ctrl-C drains it."""
    try:
        from .serving import ServerSettings, load_backend
        from .serving import serve as run_server
        from .serving.schema import Limits
    except ImportError as err:
        _fail(f"serving needs FastAPI and uvicorn: pip install 'promptembedder[serve]' ({err})")
    try:
        from .export import read_instructions

        tasks = read_instructions(instructions) if instructions else None
        backend = load_backend(model, device=device, tasks=tasks, default_instruction=instruction, default_task=task,
                               batch_size=max_batch_size)
        settings = ServerSettings(model_name or Path(model).name, max_batch_size, max_wait_ms, max_queue,
                                  Limits(max_items=max_items, max_body_bytes=int(max_body_mb * 1024 * 1024)))
    except (ValueError, FileNotFoundError, OSError) as err:
        _fail(str(err))
    run_server(backend, settings, host=host, port=port)


@app.command()
def demo(
    quick: Annotated[bool, Opt("--quick", help="a smaller budget (a few minutes)")] = False,
    output_dir: Annotated[Path, Opt()] = Path("runs/demo"),
    prompting_model: Annotated[str, Opt()] = "gemma3-270m",
    embedding_model: Annotated[str, Opt()] = "minilm-l6",
    transfer_model: Annotated[str, Opt(help="second backbone for the transfer step")] = "gemma3-270m",
    steps: Annotated[int | None, Opt(help="training steps per method (overrides the preset)")] = None,
) -> None:
    """Reproduce the paper's claims at small scale: baselines, training, LoRA, transfer; one table and plots."""
    from .demo import DemoConfig, run_demo

    config = DemoConfig.preset(quick, output_dir=str(output_dir), prompting_model=prompting_model,
                               embedding_model=embedding_model, transfer_model=transfer_model)
    if steps is not None:
        config.steps = steps
    run_demo(config, console)


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

    Methods: promptembedder-query, promptembedder-both, lora, prompt-tuning, full, and (with --nproc-per-node 2
    or more) promptembedder-fsdp, promptembedder-fsdp-grad-op."""
    from .benchmark import bench_train as run

    try:
        run(embedding_model=embedding_model, prompting_model=prompting_model, batch_size=batch_size,
            seq_len=seq_len, steps=steps, methods=methods.split(","), rounds=rounds, lora_rank=lora_rank,
            output_dir=output_dir, device=device, console=console, nproc_per_node=nproc_per_node,
            grad_cache_chunk_size=grad_cache_chunk_size, gradient_checkpointing=gradient_checkpointing,
            doc_cache=doc_cache)
    except ValueError as err:
        _fail(str(err))


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
    from .sweep import parse_configs, run_sweep

    try:
        report = run_sweep(embedding_model=embedding_model, prompting_model=prompting_model,
                           methods=methods.split(","), configs=parse_configs(configs), seq_len=seq_len, warmup=warmup,
                           steps=steps, lora_rank=lora_rank, output_dir=output_dir, device=device, profile=profile)
    except ValueError as err:
        _fail(str(err))
    from .sweep import sweep_markdown

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
    from .benchmark import bench_encode as run

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
    from .benchmark import bench_converge as run

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
    from .serving.benchmark import bench_serve as run

    run(model=model, embedding_model=embedding_model, prompting_model=prompting_model,
        concurrencies=[int(c) for c in concurrency.split(",")], requests_per_client=requests_per_client,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, threads=threads, output_dir=output_dir,
        console=console)


def main() -> None:
    app()
