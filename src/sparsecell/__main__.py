"""``python -m sparsecell`` (used with ``torchrun -m sparsecell``)."""

from .cli import main

main()
