"""`python -m promptembedder ...`, which is also what torchrun launches (`torchrun -m promptembedder train`)."""

from .cli import main

main()
