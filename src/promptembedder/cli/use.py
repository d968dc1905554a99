"""`evaluate`, `encode` and `decode-prompt`: using a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import USER_ERRORS, Opt, app, console, fail
from .io import atomic_output, check_output_file, npy_path, read_texts


@app.command()
def evaluate(
    models: Annotated[list[str], typer.Argument(help="saved PromptEmbedder / baseline folders or HF backbones")],
    tasks: Annotated[str, Opt(help="all (the six) | instructions (nli-follow, unseen-tasks, unseen-wording) | sts | "
                                   "retrieval | classification | pair | clustering | task names, comma-separated "
                                   "(sts-b, sick-r, scifact, banking77, mrpc, twentynewsgroups, nli-follow, ...)")]
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
    from .. import evaluation as ev
    from ..architectures import refuse
    from ..auto import load_embedder

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
        fail(str(err))
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

    from ..auto import load_embedder

    target = npy_path(output)
    try:  # the input and the output path first: a mistake there must not cost the whole encoding
        texts = read_texts(input)
        check_output_file(target, "--output")
    except ValueError as err:
        fail(str(err))
    try:
        embedder = load_embedder(model, device=device, strict=not force)
        vectors = embedder.encode(texts, instruction=instruction, batch_size=batch_size, prompt_type=prompt_type,
                                  show_progress_bar=True)
    except (*USER_ERRORS, TypeError) as err:
        fail(f"model {model}: {err}")
    try:
        with atomic_output(target, "--output") as tmp:
            np.save(tmp, vectors)
    except ValueError as err:
        fail(str(err))
    console.print(f"{vectors.shape[0]} embeddings of dim {vectors.shape[1]} written to {target}")


@app.command("decode-prompt")
def decode_prompt(
    model: Annotated[str, typer.Argument(help="saved PromptEmbedder folder")],
    instruction: Annotated[list[str], Opt(help="instruction(s) to decode")],
    device: Annotated[str | None, Opt()] = None,
    force: Annotated[bool, Opt("--force", help="load a saved model whose manifest does not match (warns)")] = False,
) -> None:
    """Show the text each instruction's soft prompt is closest to."""
    from ..model import PromptEmbedder
    from ..validation import check_device

    try:
        check_device(device)
        embedder = PromptEmbedder.from_pretrained(model, device=device, strict=not force)
        if embedder.generator is None:
            raise ValueError(f"{model} has no soft prompt to decode (num_soft_tokens=0)")
        decoded = [(text, embedder.decode_prompt(text)) for text in instruction]
    except USER_ERRORS as err:
        fail(f"model {model}: {err}")
    for text, prompt in decoded:
        console.print(f"{text!r} -> {prompt!r}")
