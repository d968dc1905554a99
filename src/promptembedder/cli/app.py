"""The `promptembedder` app and what its commands share: the console, one-line user errors, exit codes."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

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


def fail(message: str) -> None:
    """Report a user error in one line; under --debug re-raise the exception being handled, traceback and all."""
    if _state["debug"] and sys.exc_info()[1] is not None:
        raise
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def finish_training(result) -> None:
    """A run stopped by SIGINT/SIGTERM (checkpoint written) exits 130/143, so `train && evaluate` stops too."""
    from ..training import distributed

    if result.interrupted:
        if distributed.is_main_process():
            console.print(f"interrupted at step {result.steps}: checkpoint written; continue with --resume")
        distributed.shutdown()
        raise typer.Exit(128 + (result.stop_signal or 2))
