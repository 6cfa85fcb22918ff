"""The ``sparsecell`` command: one sub-command group per stage (one module each).

Every command writes into an output folder it names, shows progress on long work and
exits with code 2 and one line ``sparsecell: error: <what> (<fix>)`` on bad input.
"""

from __future__ import annotations

import sys

import typer

from .._errors import SparsecellError
from . import datasets, demo, encode, gwmap, images, lab, sae
from ._common import format_metrics

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="sparsecell: resolve superposition in image embeddings with sparse autoencoders.",
    pretty_exceptions_enable=False,
)
# in the order of the data flow: images → embeddings → SAE latents → measurements
app.add_typer(images.app, name="images")
app.add_typer(encode.app, name="encode")
app.add_typer(sae.app, name="sae")
app.add_typer(lab.app, name="lab")
app.add_typer(gwmap.app, name="gwmap")
app.add_typer(datasets.app, name="datasets")
app.command("demo")(demo.demo)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="sparsecell")
    except SparsecellError as e:  # raised outside a command (should not happen)
        print(f"sparsecell: error: {e}", file=sys.stderr)
        sys.exit(2)


__all__ = ["app", "format_metrics", "main"]
