"""`evaluate`, `encode` and `decode-prompt`: using a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .app import USER_ERRORS, Opt, app, console, fail
from .io import atomic_output, check_output_file, npy_path, read_texts

#: What `evaluate` scores without --tasks (an exported folder: the tasks it was exported with).
DEFAULT_TASKS = "sts-b,sick-r"


@app.command()
def evaluate(
    models: Annotated[list[str], typer.Argument(help="saved PromptEmbedder / baseline folders or HF backbones")],
    tasks: Annotated[str, Opt(help="all (the six) | instructions (nli-follow, unseen-tasks, unseen-wording) | sts | "
                                   "retrieval | classification | pair | clustering | task names, comma-separated "
                                   "(sts-b, sick-r, scifact, banking77, mrpc, twentynewsgroups, nli-follow, ...); "
                                   "default: sts-b,sick-r, and for an exported folder the tasks it was exported with")]
    = None,
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
    from .. import evaluation as ev
    from ..auto import load_embedder
    from ..export.exported import ExportedEmbedder
    from ..models.architectures import refuse

    try:
        refuse(models, "evaluate")
        names = ev.select_tasks(tasks or DEFAULT_TASKS)
        if output:
            ev.check_writable(output, overwrite)
        overrides = ev.load_instructions(instructions) if instructions else {}
        results = {}
        for reference in models:
            embedder = load_embedder(reference, device=device, max_length=max_length, strict=not force)
            chosen = embedder.evaluation_tasks() if tasks is None and isinstance(embedder, ExportedEmbedder) \
                else names
            if instruction is not None or no_instruction:
                overrides = dict.fromkeys(chosen, None if no_instruction else instruction)
            results[reference] = ev.evaluate(embedder, chosen, split, overrides, batch_size, show_progress_bar=True,
                                             in_domain=ev.in_domain_tasks(reference))
    except USER_ERRORS as err:
        fail(str(err))
    for table in ev.results_tables(results):
        console.print(table)
    if output:
        try:
            ev.write_results(output, results)
        except OSError as err:  # the scores are printed above: say so, in one line
            fail(f"--output {output}: cannot write the results ({err.strerror or err}); the tables above hold them")
        console.print(f"results written to {output}")


@app.command()
def encode(
    model: Annotated[str, typer.Argument(help="saved model folder or HF backbone")],
    input: Annotated[Path, Opt("--input", "-i", help="text file, one text per line ('-' for stdin); with "
                                                     "--output-dir also .jsonl / .csv / .tsv / .parquet")],
    output: Annotated[Path | None, Opt("--output", "-o", help=".npy file for the (n, d) embeddings ('-': its bytes "
                                                              "to stdout, for a pipe)")] = None,
    output_dir: Annotated[Path | None, Opt(help="a corpus: streamed, parquet shards (id, embedding) + manifest "
                                                "here; a rerun resumes; under torchrun each rank takes its share")]
    = None,
    instruction: Annotated[str | None, Opt()] = None,
    prompt_type: Annotated[str, Opt(help="query | document")] = "query",
    batch_size: Annotated[int, Opt()] = 32,
    text_column: Annotated[str, Opt(help="--output-dir: the text's column / key")] = "text",
    id_column: Annotated[str | None, Opt(help="--output-dir: the id's column / key (default: row numbers)")] = None,
    shard_size: Annotated[int, Opt(help="--output-dir: rows per shard")] = 10_000,
    dtype: Annotated[str, Opt(help="--output-dir: float32 | float16")] = "float32",
    overwrite: Annotated[bool, Opt("--overwrite", help="--output-dir: replace an encoding with other settings")]
    = False,
    device: Annotated[str | None, Opt()] = None,
    force: Annotated[bool, Opt("--force", help="load a saved model whose manifest does not match (warns)")] = False,
) -> None:
    """Embed a file of texts (one per line) into a .npy matrix (numpy's naming: `-o x` writes x.npy; `-o -` writes
    the .npy bytes to stdout, as `np.load(sys.stdin.buffer)` reads them), or a corpus into a folder of shards
    (--output-dir)."""
    import sys

    import numpy as np

    from ..auto import load_embedder

    if (output is None) == (output_dir is None):
        fail("give --output FILE.npy (texts in memory) or --output-dir DIR (a corpus, sharded), one of them")
    if output_dir is not None:
        _encode_corpus(model, input, output_dir, instruction, prompt_type, batch_size, text_column, id_column,
                       shard_size, dtype, overwrite, device, force)
        return
    to_stdout = str(output) == "-"
    target = output if to_stdout else npy_path(output)
    try:  # the input and the output path first: a mistake there must not cost the whole encoding
        texts = read_texts(input)
        if not to_stdout:
            check_output_file(target, "--output")
    except ValueError as err:
        fail(str(err))
    try:
        embedder = load_embedder(model, device=device, strict=not force)
        if instruction is not None and getattr(embedder, "generator", True) is None:  # as serve refuses it
            raise ValueError("a bare backbone has no soft prompt: --instruction would be ignored; drop it, or give "
                             "a saved PromptEmbedder")
        vectors = embedder.encode(texts, instruction=instruction, batch_size=batch_size, prompt_type=prompt_type,
                                  show_progress_bar=True)
    except (*USER_ERRORS, TypeError) as err:
        fail(f"model {model}: {err}")
    if to_stdout:  # stdout carries the array alone; the summary goes to stderr
        np.save(sys.stdout.buffer, vectors)
        sys.stdout.buffer.flush()
        typer.echo(f"{vectors.shape[0]} embeddings of dim {vectors.shape[1]} written to stdout (.npy)", err=True)
        return
    try:
        with atomic_output(target, "--output") as tmp:
            np.save(tmp, vectors)
    except ValueError as err:
        fail(str(err))
    console.print(f"{vectors.shape[0]} embeddings of dim {vectors.shape[1]} written to {target}")


def _encode_corpus(model: str, input: Path, output_dir: Path, instruction: str | None, prompt_type: str,
                   batch_size: int, text_column: str, id_column: str | None, shard_size: int, dtype: str,
                   overwrite: bool, device: str | None, force: bool) -> None:
    """`encode --output-dir`: corpus.encode_corpus on this process's device and share of the shards."""
    import torch

    from ..auto import load_embedder
    from ..corpus import encode_corpus, read_rows
    from ..training import distributed

    if str(input) == "-":
        fail("--output-dir reads --input twice when resuming: give a file, not stdin")
    try:
        next(read_rows(input, text_column, id_column), None)  # a wrong column must not wait for the model to load
        chosen = torch.device(device) if device else distributed.local_device()
        distributed.init_from_env(chosen)
        embedder = load_embedder(model, device=str(chosen), strict=not force)
        manifest = encode_corpus(embedder, input, output_dir, instruction=instruction, prompt_type=prompt_type,
                                 text_column=text_column, id_column=id_column, shard_size=shard_size,
                                 batch_size=batch_size, dtype=dtype, model_name=model, overwrite=overwrite,
                                 show_progress_bar=True)
        main = distributed.is_main_process()
    except (*USER_ERRORS, TypeError) as err:
        fail(str(err))
    finally:
        distributed.shutdown()
    if main:
        console.print(f"{manifest['rows']} embeddings in {len(manifest['shards'])} shards written to {output_dir}")


@app.command("decode-prompt")
def decode_prompt(
    model: Annotated[str, typer.Argument(help="saved PromptEmbedder folder")],
    instruction: Annotated[list[str], Opt(help="instruction(s) to decode")],
    device: Annotated[str | None, Opt()] = None,
    force: Annotated[bool, Opt("--force", help="load a saved model whose manifest does not match (warns)")] = False,
) -> None:
    """Show the text each instruction's soft prompt is closest to, and with several instructions how alike their
    prompts are (cosine): what tells whether P reads the difference between them."""
    from ..models.prompt_embedder import PromptEmbedder
    from ..settings import check_device

    try:
        check_device(device)
        embedder = PromptEmbedder.from_pretrained(model, device=device, strict=not force)
        if embedder.generator is None:
            raise ValueError(f"{model} has no soft prompt to decode (num_soft_tokens=0)")
        decoded = [(text, embedder.decode_prompt(text)) for text in instruction]
        cosine = embedder.prompt_similarity(instruction) if len(instruction) > 1 else None
    except USER_ERRORS as err:
        fail(f"model {model}: {err}")
    for number, (text, prompt) in enumerate(decoded, 1):
        console.print(f"#{number} {text!r} -> {prompt!r}")
    if cosine is not None:  # near 1: E gets the same prompt for both, whatever the decoded text says
        table = Table(title="cosine of the soft prompts (1: the same prompt)")
        table.add_column("")
        for number in range(1, len(instruction) + 1):
            table.add_column(f"#{number}", justify="right")
        for number, row in enumerate(cosine.tolist(), 1):
            table.add_row(f"#{number}", *(f"{value:.4f}" for value in row))
        console.print(table)
