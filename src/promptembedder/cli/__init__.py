"""The `promptembedder` command: a thin layer over the library API, one module per group of commands."""

from . import bench, ship, train, use
from .app import app

__all__ = ["app", "bench", "main", "ship", "train", "use"]


def main() -> None:
    app()
