"""sweep(): one model per value, frontier.csv + frontier.png written atomically."""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd
import pytest

import sparsecell as spc

# the package exports the function sweep under the module's name
sweep_mod = importlib.import_module("sparsecell.sae.sweep")
KW = dict(expansion=4, steps=200, batch_size=256, lr=3e-3, progress=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def test_topk_sweep_frontier(toy, tmp_path):
    out = tmp_path / "sweep"
    df = spc.sae.sweep(toy.X, arch="topk", values=(2, 16), out=out, save_models=True, **KW)
    assert list(df["k"]) == [2, 16]
    assert {"arch", "fvu", "mse", "cosine", "l0", "dead_frac", "dense_frac"} <= set(df.columns)
    fvu = dict(zip(df["k"], df["fvu"], strict=True))
    l0 = dict(zip(df["k"], df["l0"], strict=True))
    # 8x more active latents must reconstruct better (measured FVU 0.45 vs 0.17)
    assert fvu[16] < fvu[2]
    assert l0[2] <= 2 < l0[16] <= 16
    assert sorted(p.name for p in out.iterdir()) == ["frontier.csv", "frontier.png", "models"]
    csv = pd.read_csv(out / "frontier.csv")
    assert len(csv) == 2
    pd.testing.assert_series_equal(csv["fvu"], df["fvu"], check_exact=False, rtol=1e-12)
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = spc.sae.load(out / "models" / "k=16")
    assert m.cfg.k == 16 and m.metrics["fvu"] == pytest.approx(fvu[16])
    assert _leftovers(tmp_path) == []


def test_relu_sweep_knob_is_the_sparsity_coefficient(toy):
    df = spc.sae.sweep(toy.X, arch="relu", values=(0.1, 5.0), **{**KW, "steps": 100})
    assert list(df["sparsity_coeff"]) == [0.1, 5.0]
    l0 = dict(zip(df["sparsity_coeff"], df["l0"], strict=True))
    # a 50x stronger L1 penalty gives sparser codes (measured L0 15 vs 48)
    assert l0[5.0] < l0[0.1]


def test_failed_sweep_write_keeps_the_old_folder(toy, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "frontier.csv").write_text("old\n")

    def boom(*args, **kwargs):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(sweep_mod, "plot_frontier", boom)
    with pytest.raises(RuntimeError, match="plot failed"):
        spc.sae.sweep(toy.X, arch="topk", values=(2,), out=out, **{**KW, "steps": 3})
    assert [p.name for p in out.iterdir()] == ["frontier.csv"]
    assert (out / "frontier.csv").read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_empty_grid(toy):
    with pytest.raises(spc.SparsecellError, match="grid is empty"):
        spc.sae.sweep(toy.X, values=())
