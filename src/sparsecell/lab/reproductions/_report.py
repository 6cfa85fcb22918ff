"""Write a reproduction's table, figure and manifest into one folder, atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..._io import atomic_dir, dump_json, manifest


def write_reproduction(
    out: str | os.PathLike,
    name: str,
    table: pd.DataFrame,
    figure: Any,
    params: dict[str, Any],
    *,
    seed: int,
    summary: str = "",
) -> Path:
    """Write ``table.csv``, ``figure.png``, ``manifest.json`` (and ``summary.md``) to ``out``.

    Parameters
    ----------
    out
        Folder to create or replace; it appears only when everything is written.
    name
        Reproduction name (``"toy"``, ``"digits"``, ``"phantom"``).
    table
        The numbers, one row per measurement, written without the index.
    figure
        A matplotlib figure; it is closed after saving.
    params
        The configuration that made the result (stored in the manifest).
    seed
        Base random seed.
    summary
        Optional text (markdown) stating the claim and whether it held.

    Returns
    -------
    Path
        ``out``.
    """
    import matplotlib.pyplot as plt

    out = Path(out)
    try:
        with atomic_dir(out) as tmp:
            table.to_csv(tmp / "table.csv", index=False)
            figure.savefig(tmp / "figure.png", dpi=120, bbox_inches="tight")
            if summary:
                (tmp / "summary.md").write_text(summary)
            (tmp / "manifest.json").write_text(
                dump_json(manifest(f"sparsecell.lab.reproduce.{name}", params, seed=seed))
            )
    finally:
        plt.close(figure)
    return out
