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
    from ..export.exporter import export, read_instructions, task_instructions

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
    host: Annotated[str, Opt(help="address to bind; beyond loopback, set --api-key")] = "127.0.0.1",
    port: Annotated[int, Opt()] = 8000,
    model_name: Annotated[str | None, Opt(help="the id clients pass as `model` (default: MODEL's folder name)")]
    = None,
    task: Annotated[str | None, Opt(help="default task when a request names none (e.g. sts-b)")] = None,
    instruction: Annotated[str | None, Opt(help="default instruction when a request names none")] = None,
    instructions: Annotated[Path | None, Opt(help="JSON {name: instruction}: more tasks clients may name")] = None,
    max_batch_size: Annotated[int, Opt(help="texts encoded together at most; larger requests take turns")] = 64,
    max_wait_ms: Annotated[float, Opt(help="how long a request waits for others to batch with")] = 5.0,
    max_queue: Annotated[int, Opt(help="texts waiting at most; beyond, 503 (a larger request: 413)")] = 4096,
    max_items: Annotated[int, Opt(help="texts per request at most; beyond, 400")] = 2048,
    max_text_chars: Annotated[int, Opt(help="characters per text at most; beyond, 400")] = 32768,
    max_body_mb: Annotated[float, Opt(help="request body size limit; beyond, 413")] = 8.0,
    body_timeout: Annotated[float, Opt(help="seconds a client has to send its whole request body; beyond, 408")]
    = 30.0,
    prompt_cache_size: Annotated[int, Opt(help="soft prompts kept (least recently used dropped first)")] = 256,
    grace_period: Annotated[float, Opt(help="seconds in-flight requests get after SIGTERM/Ctrl-C; then 503")]
    = 30.0,
    api_key: Annotated[str | None, Opt(envvar="PROMPTEMBEDDER_API_KEY", show_envvar=True,
                                       help="clients must send 'Authorization: Bearer KEY' (/health stays open)")]
    = None,
    trust_remote_code: Annotated[bool, Opt("--trust-remote-code", help="let an exported folder run its own code "
                                           "(its edited or foreign .py files); only for folders you trust")] = False,
    device: Annotated[str | None, Opt()] = None,
) -> None:
    """An OpenAI-compatible embeddings server (POST /v1/embeddings) with dynamic batching; Ctrl-C drains it."""
    import math

    try:
        from ..serving import ServerSettings, load_backend
        from ..serving import serve as run_server
        from ..serving.app import check_port
        from ..serving.schema import Limits
    except ImportError as err:
        fail(f"serving needs FastAPI and uvicorn: pip install 'promptembedder[serve]' ({err})")
    try:
        from ..export.exporter import read_instructions

        if not (math.isfinite(max_body_mb) and max_body_mb * 1024 * 1024 >= 1):
            raise ValueError(f"--max-body-mb must be a positive number, got {max_body_mb}")
        limits = Limits(max_items=max_items, max_body_bytes=int(max_body_mb * 1024 * 1024),
                        max_text_chars=max_text_chars, body_timeout=body_timeout)
        settings = ServerSettings(model_name or Path(model).name, max_batch_size, max_wait_ms, max_queue, limits,
                                  grace_period, api_key)
        check_port(port)
        tasks = read_instructions(instructions) if instructions else None
        backend = load_backend(model, device=device, tasks=tasks, default_instruction=instruction, default_task=task,
                               batch_size=max_batch_size, prompt_cache_size=prompt_cache_size,
                               trust_remote_code=trust_remote_code)
    except (ValueError, FileNotFoundError, OSError) as err:
        fail(str(err))
    run_server(backend, settings, host=host, port=port)
