"""Patches, cell crops, nuclei segmentation and cell-death rates on synthetic fields."""

from __future__ import annotations

import numpy as np
import pytest
from images_helpers import disk_field, grid_centres

import sparsecell.images as im
from sparsecell import SparsecellError


def test_patches_tile_exactly():
    rng = np.random.default_rng(0)
    field = rng.integers(0, 60000, (3, 300, 520), dtype=np.uint16)
    units, pos = im.extract_patches(field, 128)
    assert units.shape == (2 * 4, 3, 128, 128) and units.dtype == np.float32
    expect = [(y, x) for y in (0, 128) for x in (0, 128, 256, 384)]
    assert [tuple(p) for p in pos] == expect  # row-major from the top-left corner
    for u, (y, x) in zip(units, pos, strict=True):
        np.testing.assert_array_equal(u, field[:, y : y + 128, x : x + 128])
    # every pixel of the covered area appears exactly once
    cover = np.zeros(field.shape[1:], int)
    for y, x in pos:
        cover[y : y + 128, x : x + 128] += 1
    assert cover[:256, :512].min() == 1 and cover.max() == 1 and cover[256:].sum() == 0
    assert len(im.patch_positions(100, 1000, 128)) == 0


def test_segmentation_finds_disks_with_their_centroids():
    centres = grid_centres(n_side=4, size=256, jitter=6, seed=3)
    field = disk_field(centres, radius=9, seed=3)
    labels = im.segment_nuclei(field[1])
    tab = im.nuclei_table(labels)
    assert len(tab) == len(centres)
    found = tab[["y", "x"]].to_numpy()
    for c in centres:
        d = np.hypot(*(found - np.asarray(c)).T)
        assert d.min() < 2.0
    assert tab["area"].between(np.pi * 9**2 * 0.8, np.pi * 9**2 * 1.2).all()


def test_segmentation_splits_touching_disks_and_filters_areas():
    yy, xx = np.mgrid[:160, :160]
    img = np.zeros((160, 160))
    for cy, cx, r in [(50, 50, 15), (50, 76, 15), (120, 120, 12), (120, 40, 3)]:
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1000.0
    tab = im.nuclei_table(im.segment_nuclei(img, im.NucleiConfig(sigma=1)))
    assert len(tab) == 3  # the two touching disks apart, the 3-px speck dropped (min_area 30)
    np.testing.assert_allclose(np.sort(tab["x"].to_numpy()), [50, 76, 120], atol=1.5)
    one = im.segment_nuclei(img, im.NucleiConfig(sigma=1, split_rel=0))
    assert one.max() == 2  # connected components: touching pair as one
    big = im.segment_nuclei(img, im.NucleiConfig(sigma=1, max_area=600))
    assert big.max() == 1  # only the r=12 disk (area ~450) is under 600
    with pytest.raises(SparsecellError, match="area range"):
        im.NucleiConfig(min_area=50, max_area=10)


def test_cell_crops_are_centred_on_the_disks():
    centres = [(40.3, 40.6), (100.0, 130.2), (200.4, 60.0), (10.0, 240.0)]  # last one: edge
    field = disk_field(centres, radius=8, seed=1)
    tab = im.nuclei_table(im.segment_nuclei(field[1]))
    units, pos, kept = im.crop_units(field, tab[["y", "x"]].to_numpy(), 48, edge="drop")
    assert len(tab) == 4 and len(units) == 3  # the edge crop is dropped
    for u, p, k in zip(units, pos, kept, strict=True):
        np.testing.assert_array_equal(u, field[:, p[0] : p[0] + 48, p[1] : p[1] + 48])
        nuc = u[1] > 500
        cy, cx = np.argwhere(nuc).mean(axis=0)
        assert abs(cy - 24) <= 1.0 and abs(cx - 24) <= 1.0  # nucleus at the crop centre
        assert np.hypot(*(tab[["y", "x"]].to_numpy()[k] - p - 24)) <= 0.75
    padded, ppos, pkept = im.crop_units(field, tab[["y", "x"]].to_numpy(), 48, edge="pad")
    assert len(padded) == 4
    edge_i = int(np.flatnonzero(ppos[:, 0] < 0)[0])
    y0, x0 = ppos[edge_i]
    inside = padded[edge_i][:, -y0:, :]
    assert (padded[edge_i][:, :-y0] == 0).all()  # rows above the field: zeros
    np.testing.assert_array_equal(inside[:, :, : 256 - x0], field[:, : 48 + y0, x0:])


def test_cell_death_rate_known_answer():
    centres = grid_centres(n_side=4, size=256, jitter=3, seed=2)
    dead = set(range(0, 16, 2))  # half of the nuclei
    field = disk_field(centres, radius=9, dead=dead, seed=2)
    labels = im.segment_nuclei(field[1])
    tab = im.nuclei_table(labels)
    t = im.dead_threshold(field[2])
    above = field[2] > t
    rates = im.death_rate_cells(labels, above, tab["label"].to_numpy())
    # each nucleus is all dead or all alive, and it is the ones we made dead
    assert np.isin(np.round(rates, 6), [0.0, 1.0]).all()
    truth = np.zeros(len(tab))
    for k, (y, x) in enumerate(tab[["y", "x"]].to_numpy()):
        i = int(np.argmin([np.hypot(y - cy, x - cx) for cy, cx in centres]))
        truth[k] = i in dead
    np.testing.assert_array_equal(np.round(rates), truth)
    assert im.cell_death_rate(labels, field[2]) == pytest.approx(0.5, abs=0.05)
    # windows: a patch without nuclei is NaN, the rest lie in [0, 1]
    pos = np.array([[0, 0], [0, 128], [128, 0], [128, 128], [300, 300]])
    w = im.death_rate_windows(labels, above, pos, 128)
    assert np.isnan(w[-1]) and np.all((w[:4] >= 0) & (w[:4] <= 1))
    assert np.nanmean(w[:4]) == pytest.approx(0.5, abs=0.1)


def test_no_dead_cells_reads_as_alive():
    centres = grid_centres(n_side=4, size=256, jitter=3, seed=5)
    field = disk_field(centres, radius=9, dead=set(), seed=5)
    field[2][field[1] > 500] += 15  # live nuclei take up a trace of the dead stain
    labels = im.segment_nuclei(field[1])
    assert im.cell_death_rate(labels, field[2]) < 0.01  # the noise floor holds
    # the paper's plain Otsu splits the background noise and calls live nuclei dead
    assert im.cell_death_rate(labels, field[2], noise_sigmas=0) > 0.5


def test_window_fraction_matches_brute_force():
    rng = np.random.default_rng(0)
    mask = rng.random((50, 70)) < 0.3
    pos = np.array([[0, 0], [10, 20], [40, 60], [-5, -5]])
    got = im.window_fraction(mask, pos, 16)
    for (y, x), g in zip(pos, got, strict=True):
        win = mask[max(y, 0) : y + 16, max(x, 0) : x + 16]
        assert g == pytest.approx(win.mean())
