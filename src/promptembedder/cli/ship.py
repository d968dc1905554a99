"""`export` and `serve`: a model for other tools (sentence-transformers) and over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import Opt, app, console, fail


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
    from ..export import export, read_instructions, task_instructions

    try:
        chosen = read_instructions(instructions) if instructions else {}
        if tasks:
            chosen.update(task_instructions([t.strip() for t in tasks.split(",") if t.strip()]))
        path = export(model, out, chosen, overwrite=overwrite, verify=verify)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
        fail(str(err))
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
        from ..serving import ServerSettings, load_backend
        from ..serving import serve as run_server
        from ..serving.schema import Limits
    except ImportError as err:
        fail(f"serving needs FastAPI and uvicorn: pip install 'promptembedder[serve]' ({err})")
    try:
        from ..export import read_instructions

        tasks = read_instructions(instructions) if instructions else None
        backend = load_backend(model, device=device, tasks=tasks, default_instruction=instruction, default_task=task,
                               batch_size=max_batch_size)
        settings = ServerSettings(model_name or Path(model).name, max_batch_size, max_wait_ms, max_queue,
                                  Limits(max_items=max_items, max_body_bytes=int(max_body_mb * 1024 * 1024)))
    except (ValueError, FileNotFoundError, OSError) as err:
        fail(str(err))
    run_server(backend, settings, host=host, port=port)
