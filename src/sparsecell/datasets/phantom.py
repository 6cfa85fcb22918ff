"""Phantom multiplexed neuron images with known ground truth.

``phantom(...)`` renders cell-centred image units (``N × 4 × S × S``, float32 in [0, 1],
channels ``mito``, ``lyso``, ``nuclei``, ``dead``) of cultured neurons: a soma with a
nucleus, branching neurites, TMRM-like mitochondria (tubules whose brightness tracks
membrane potential, or round fragments), LysoTracker-like lysosomal puncta, a Hoechst-like
nucleus and a CytoTox-like dead-cell stain that fills the nuclei of dead cells.
``phantom_fields(...)`` renders whole fields with many cells and writes them as TIFF files
plus a ``metadata.csv``, so the image pipeline can run end to end on known ground truth.

Design
------
Every unit is drawn from a generative model whose per-unit causes are stored in ``obs`` as
``gt_`` columns. The phenotypes follow the hints in DESIGN.md ("Phantom: phenotype hints"):

* **Genotype profiles** (overlapping shifts of the cell-level distributions, never a
  switch): *SNCA* — lower mitochondrial potential, more fragmentation, more inclusions,
  stronger response to progression; *GBA* — more and larger lysosomes, autophagosomes and
  lipofuscin; *LRRK2* — lower potential, fragmentation, enlarged and perinuclearly
  clustered lysosomes, shorter neurites; *Control* — reference, weak response to progression.
* **Disease progression** ``gt_progression`` in [0, 1] is a cell-level pseudotime
  (Control cells sit low, disease cells spread). Scaled by a genotype-specific sensitivity
  (Control 0.3, SNCA 1.0, GBA 0.8, LRRK2 0.9) it lowers mitochondrial potential, raises
  fragmentation, lysosomal load, perinuclear clustering, neurite degeneration and the
  probability of cell death.
* **Cell death**: each cell dies with probability ``gt_death_hazard`` (logistic in genotype,
  line and progression); a dying cell is at a stage ``gt_death_stage`` in (0, 1]. Dying
  nuclei condense (smaller, brighter, smoother), mitochondria lose potential, neurites
  fragment; from stage 0.4 (``gt_dead``: membrane compromised) the dead-cell stain fills the
  nucleus. ``cell_death_rate`` is then *measured from the image* as the seed paper did:
  nuclei are segmented (nuclear channel above its Otsu threshold) and the rate is the
  fraction of nuclear pixels above an Otsu threshold of the dead-cell channel. Both
  thresholds are computed per plate (one imaging batch, one exposure), pooled over the
  plate's units; the dead-channel threshold is floored a few noise widths above the living
  nuclei so that a plate without dead cells does not split pure noise.
* **Nuisance**: lines within a genotype shift potential, fragmentation, lysosomal load, soma
  size, neurite length, death and progression; plates and wells scale each channel's gain
  and shift its background; fields have vignetting (so ``y``, ``x`` matter); shot and read
  noise; neighbouring cells and neurites of other cells intrude into a unit.

Independent per-unit factors (``Phantom.factors``)
--------------------------------------------------
Each factor below has its own random draw per unit (some have genotype-, line- or
progression-dependent means, none is a function of another). There are 58 of them, more
than the ≤ 32 dimensions the encoder's embedding will have, and 29 are rare: zero in 80-98 %
of units (organelle sub-populations, inclusions and aggregates, nuclear oddities, dying
cells, artefacts); four more (nucleoli, branches, neighbours, crossing neurites) are zero in
a third to a half. An encoder that must keep them all has to superpose them, which is the
regime in which an SAE should pull them apart again. Lengths are in pixels of a 128-pixel
unit (the geometry scales with ``size``).

Cell and nucleus geometry (dense): ``gt_progression``, ``gt_soma_size`` (radius),
``gt_soma_elongation``, ``gt_soma_angle``, ``gt_cell_dy``, ``gt_cell_dx`` (offset of the
soma from the unit centre), ``gt_nucleus_ratio`` (nuclear / soma radius),
``gt_nucleus_elongation``, ``gt_nucleus_offset``, ``gt_nucleus_intensity``,
``gt_chromatin_texture`` (contrast), ``gt_chromatin_scale`` (texture frequency, 0 fine to 1
coarse), ``gt_nucleoli`` (count).

Mitochondria: ``gt_mito_potential``, ``gt_mito_fragmentation`` (fraction of fragments),
``gt_mito_density``, ``gt_neurite_mito_density`` (dense); ``gt_mito_perinuclear``
(collapse of the network around the nucleus), ``gt_mito_hyperfused`` (fraction of very
long tubules), ``gt_mito_megamito``, ``gt_mito_donuts``, ``gt_mito_swollen`` (counts),
``gt_mito_clump`` (radius of a clump of fragments), ``gt_mito_depolarised`` (fraction of
dim, depolarised mitochondria), ``gt_mito_polarity`` (one-sided concentration) (sparse).

Lysosomes: ``gt_lyso_count``, ``gt_lyso_size``, ``gt_lyso_perinuclear``,
``gt_lyso_intensity`` (dense); ``gt_lyso_enlarged`` (vacuole-like rings), ``gt_lyso_cluster``
(puncta in one tight cluster), ``gt_lyso_neuritic`` (puncta in neurites), ``gt_lyso_rings``,
``gt_lyso_tubular``, ``gt_autophagosomes`` (counts), ``gt_lyso_leakage`` (diffuse cytosolic
signal) (sparse).

Neurites: ``gt_neurite_count``, ``gt_neurite_length``, ``gt_neurite_branches``,
``gt_neurite_thickness``, ``gt_neurite_tortuosity``, ``gt_neurite_integrity`` (1 intact,
towards 0 beaded and broken) (dense); ``gt_neurite_swellings``, ``gt_growth_cones``
(counts, sparse).

Nucleus, sparse: ``gt_chromocenters``, ``gt_micronuclei`` (counts), ``gt_nuclear_bleb``,
``gt_nuclear_invagination`` (sizes), ``gt_binucleate`` (0/1).

Inclusions and aggregates, sparse: ``gt_inclusion`` (radius of an organelle-excluding
aggregate with a lysosomal rim, SNCA-enriched), ``gt_lipofuscin`` (autofluorescent granules
seen in every channel, GBA- and progression-enriched), ``gt_vacuoles`` (count of holes).

Death, sparse: ``gt_death_stage``. Surroundings and imaging: ``gt_neighbours`` (other
cells intruding), ``gt_crossing_neurites`` (neurites of cells outside the unit),
``gt_debris`` (dead-stain-positive specks), ``gt_defocus`` (blur sigma), ``gt_dust``
(out-of-focus blob amplitude).

Derived, not counted as factors: ``gt_dead`` (stage ≥ 0.4), ``gt_death_hazard`` (the cell's
probability of dying, the ground-truth cell-death rate), ``gt_neighbours_dead``.
The ``gt_`` columns hold each cell's causes; death acts on top of them when the cell is
drawn (soma and nucleus shrink, the nucleus brightens and loses texture and nucleoli,
potential falls, fragmentation and neurite damage rise, neurites retract), so the
columns stay independent of ``gt_death_stage``.

Speed: rendering is vectorised over chunks of 64 units (shapes rasterised on small local
windows with numpy broadcasting, points splatted bilinearly and blurred with cascaded
separable gaussians). 20,000 units of 128 x 128 take about 115 s on one CPU core
(~175 units/s) and 70 s with ``n_jobs=2``; 64 x 64 units are about 3 times faster. Every
chunk has its own random stream, so the output is identical for any ``n_jobs``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from .._errors import SparsecellError
from .._io import atomic_dir, atomic_write_text, dump_json, manifest

CHANNELS = ("mito", "lyso", "nuclei", "dead")
GENOTYPES = ("Control", "SNCA", "GBA", "LRRK2")

_BASE = 128  # the geometry below is defined for 128-pixel units
_CHUNK = 64  # units rendered together; fixed, so results never depend on n_jobs
_TILES = 8  # a virtual field holds 8 x 8 non-overlapping units (1024 px at 128)
_DEAD_STAGE = 0.4  # from this death stage the membrane is open: dead-stain positive
_LEVELS = np.array([0.6, 0.9, 1.35, 2.0, 3.0, 4.5])  # gaussian sigmas of splat layers
_LOG_STEP = math.log(1.5)

# --------------------------------------------------------------------------- genotypes

_PROFILE_DEFAULTS = dict(
    potential=0.0,  # additive shift of mitochondrial potential (Control = 1)
    frag=0.0,  # logit shift of the fragmented fraction
    lyso_load=0.0,  # log-multiplier of the lysosome count
    lyso_size=0.0,  # log-multiplier of lysosome size
    lyso_peri=0.0,  # logit shift of perinuclear clustering
    lyso_enlarged=0.0,  # log-multiplier of the rate of enlarged lysosomes
    lyso_cluster=0.0,  # log-multiplier of the rate of a tight lysosome cluster
    autophagy=0.0,  # log-multiplier of the rate of autophagosomes
    lipofuscin=0.0,  # log-multiplier of the rate of lipofuscin
    inclusion=0.0,  # log-multiplier of the rate of inclusions
    neurite_length=0.0,  # log-multiplier of neurite length
    death=0.0,  # logit shift of the death hazard
    stress=0.3,  # how strongly progression acts on the cell
    prog_a=1.6,  # Beta(a, b) of progression
    prog_b=4.0,
)
_PROFILES: dict[str, dict[str, float]] = {
    "Control": {},
    "SNCA": dict(
        potential=-0.18,
        frag=0.8,
        lyso_load=0.08,
        lyso_peri=0.2,
        inclusion=1.9,
        neurite_length=-0.1,
        death=0.5,
        stress=1.0,
        prog_a=2.2,
        prog_b=2.2,
    ),
    "GBA": dict(
        potential=-0.04,
        frag=0.2,
        lyso_load=0.55,
        lyso_size=0.25,
        lyso_peri=0.1,
        lyso_enlarged=0.6,
        autophagy=1.1,
        lipofuscin=1.2,
        inclusion=0.4,
        death=0.5,
        stress=0.8,
        prog_a=2.0,
        prog_b=2.5,
    ),
    "LRRK2": dict(
        potential=-0.13,
        frag=0.65,
        lyso_load=0.12,
        lyso_size=0.22,
        lyso_peri=0.9,
        lyso_enlarged=1.5,
        lyso_cluster=1.2,
        autophagy=0.5,
        neurite_length=-0.2,
        death=0.4,
        stress=0.9,
        prog_a=2.1,
        prog_b=2.3,
    ),
}
_PKEYS = tuple(_PROFILE_DEFAULTS)
# standard deviations of the line (patient background) effects
_LINE_SD = dict(
    potential=0.08, frag=0.3, lyso_load=0.2, soma=0.08, neurite_length=0.15, death=0.3, prog=0.07
)
_LKEYS = tuple(_LINE_SD)

FACTORS = (
    "gt_progression",
    "gt_soma_size",
    "gt_soma_elongation",
    "gt_soma_angle",
    "gt_cell_dy",
    "gt_cell_dx",
    "gt_nucleus_ratio",
    "gt_nucleus_elongation",
    "gt_nucleus_offset",
    "gt_nucleus_intensity",
    "gt_chromatin_texture",
    "gt_chromatin_scale",
    "gt_nucleoli",
    "gt_mito_potential",
    "gt_mito_fragmentation",
    "gt_mito_density",
    "gt_neurite_mito_density",
    "gt_mito_perinuclear",
    "gt_mito_hyperfused",
    "gt_mito_megamito",
    "gt_mito_donuts",
    "gt_mito_swollen",
    "gt_mito_clump",
    "gt_mito_depolarised",
    "gt_mito_polarity",
    "gt_lyso_count",
    "gt_lyso_size",
    "gt_lyso_perinuclear",
    "gt_lyso_intensity",
    "gt_lyso_enlarged",
    "gt_lyso_cluster",
    "gt_lyso_neuritic",
    "gt_lyso_rings",
    "gt_lyso_tubular",
    "gt_autophagosomes",
    "gt_lyso_leakage",
    "gt_neurite_count",
    "gt_neurite_length",
    "gt_neurite_branches",
    "gt_neurite_thickness",
    "gt_neurite_tortuosity",
    "gt_neurite_integrity",
    "gt_neurite_swellings",
    "gt_growth_cones",
    "gt_chromocenters",
    "gt_micronuclei",
    "gt_nuclear_bleb",
    "gt_nuclear_invagination",
    "gt_binucleate",
    "gt_inclusion",
    "gt_lipofuscin",
    "gt_vacuoles",
    "gt_death_stage",
    "gt_neighbours",
    "gt_crossing_neurites",
    "gt_debris",
    "gt_defocus",
    "gt_dust",
)
_DERIVED = ("gt_dead", "gt_death_hazard", "gt_neighbours_dead")
# factors that belong to the whole unit (canvas), not to its cell
_CANVAS_FACTORS = ("gt_neighbours", "gt_crossing_neurites", "gt_defocus", "gt_dust")


@dataclass(frozen=True)
class Phantom:
    """Phantom image units with their ground truth.

    Attributes
    ----------
    units
        ``(N, 4, size, size)`` float32 in [0, 1], channels first.
    obs
        One row per unit (index ``"u0"``, ...): ``genotype`` (categorical), ``line``,
        ``plate``, ``well``, ``field``, ``y``, ``x`` (centre of the unit in its virtual
        1024-pixel field, 8 x 8 units), ``cell_death_rate`` (measured from the image) and the
        ``gt_`` ground-truth columns.
    channels
        ``["mito", "lyso", "nuclei", "dead"]``.
    factors
        Names of the ``gt_`` columns that are independent per-unit factors.
    label_channels
        ``["dead"]``: used for ``cell_death_rate``, dropped from what an encoder sees.
    """

    units: np.ndarray
    obs: pd.DataFrame
    channels: list[str]
    factors: list[str]
    label_channels: list[str] = field(default_factory=lambda: ["dead"])

    def __repr__(self) -> str:
        n, c, s, _ = self.units.shape
        return (
            f"Phantom(n_units={n}, size={s}, channels={self.channels}, "
            f"genotypes={list(self.obs['genotype'].cat.categories)}, "
            f"factors={len(self.factors)})"
        )


# --------------------------------------------------------------------------- public API


def phantom(
    n_units: int = 2000,
    size: int = 128,
    *,
    genotypes: Sequence[str] = GENOTYPES,
    lines_per_genotype: int = 3,
    plates: int = 2,
    wells_per_plate: int | None = None,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = False,
) -> Phantom:
    """Render ``n_units`` cell-centred phantom neuron units with known ground truth.

    Parameters
    ----------
    n_units
        Number of units (one neuron centred in each, plus intruding neighbours).
    size
        Side of a unit in pixels. The field of view is the same at every size (a
        128-pixel unit's worth); ``size`` sets the sampling, so small sizes are fast
        low-resolution versions of the same scenes.
    genotypes
        Genotype classes to draw, a subset of ``("Control", "SNCA", "GBA", "LRRK2")``.
    lines_per_genotype
        Cell lines (patients) per genotype; each has its own random line effects.
    plates
        Number of plates; each has its own per-channel gain, background and vignetting.
    wells_per_plate
        Wells per plate (default: one per line). Lines fill the wells in order,
        continuing across plates (shifted by one well per plate when each plate holds
        whole sets of lines); every well has its own gain and background.
    seed
        Random seed; the same seed gives identical units and obs.
    n_jobs
        Worker processes (``-1``: all cores). The output does not depend on it.
    progress
        Show a progress bar.

    Returns
    -------
    Phantom
        ``units``, ``obs``, ``channels`` and the list of independent ``factors``.
    """
    genotypes, lay, place = _setup(
        "n_units", n_units, size, genotypes, lines_per_genotype, plates, wells_per_plate, seed
    )
    n_units, size = int(n_units), int(size)
    slot, _, y, x, line = place

    units = np.empty((n_units, 4, size, size), np.float32)
    gts: dict[str, np.ndarray] = {}
    tasks = []
    for ci, start in enumerate(range(0, n_units, _CHUNK)):
        sl = slice(start, min(start + _CHUNK, n_units))
        tasks.append(
            dict(
                seed=seed,
                chunk=ci,
                size=size,
                line=line[sl],
                geno=lay["line_geno"][line[sl]],
                gain=lay["gain"][slot[sl]],
                bg=lay["bg"][slot[sl]],
                vignette=lay["vignette"][lay["slot_plate"][slot[sl]]],
                y=y[sl],
                x=x[sl],
                profiles=lay["profiles"],
                lines=lay["line_eff"],
            )
        )
    starts = list(range(0, n_units, _CHUNK))
    for start, (u, g) in zip(
        starts, _run(_unit_chunk, tasks, n_jobs, progress, "phantom"), strict=True
    ):
        units[start : start + len(u)] = u
        for key, val in g.items():
            gts.setdefault(key, np.empty(n_units, val.dtype))[start : start + len(u)] = val

    rate = _death_rate(units, lay["slot_plate"][slot])
    obs = _obs_table(genotypes, lay, place, gts, cell_death_rate=rate)
    return Phantom(units=units, obs=obs, channels=list(CHANNELS), factors=list(FACTORS))


def phantom_fields(
    out: str | os.PathLike,
    n_fields: int = 8,
    field_size: int = 512,
    *,
    genotypes: Sequence[str] = GENOTYPES,
    lines_per_genotype: int = 3,
    plates: int = 2,
    wells_per_plate: int | None = None,
    cells_per_field: int | None = None,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Write phantom fields as multichannel TIFFs plus ``metadata.csv`` into ``out``.

    Each field is a ``4 × field_size × field_size`` uint16 TIFF (axes ``CYX``, channels
    ``mito, lyso, nuclei, dead``; intensities are the phantom's [0, 1] scaled by 65535)
    holding many neurons of one line, imaged with its plate's and well's gain, background
    and vignetting. Pixel size is that of a 128-pixel ``phantom`` unit, so cropping
    128-pixel patches gives units like ``phantom``'s.

    ``out`` is written atomically and replaced if it exists. It holds ``fields/*.tif``,
    ``metadata.csv`` (columns ``file`` (relative to ``out``), ``plate``, ``well``,
    ``field``, ``line``, ``genotype``, ``channels`` (comma-joined names)), ``cells.csv``
    (one row per cell: ``file``, ``cell``, centre ``y``, ``x`` in the field and its
    ground-truth ``gt_`` columns) and ``manifest.json``.

    Parameters
    ----------
    out
        Output folder.
    n_fields
        Number of fields, spread evenly over the plates' wells.
    field_size
        Side of a field in pixels (at least 128).
    genotypes, lines_per_genotype, plates, wells_per_plate, seed, n_jobs, progress
        As in :func:`phantom`.
    cells_per_field
        Cells per field (default about 1.4 per 128 x 128 pixels, as dense as ``phantom``).

    Returns
    -------
    pandas.DataFrame
        The metadata table written to ``metadata.csv``.
    """
    import tifffile

    genotypes = _check_common(genotypes, lines_per_genotype, plates, wells_per_plate, seed)
    if not isinstance(n_fields, int | np.integer) or n_fields < 1:
        raise SparsecellError(f"n_fields={n_fields!r} is not a positive integer", "pass >= 1")
    if not isinstance(field_size, int | np.integer) or not 128 <= field_size <= 2048:
        raise SparsecellError(
            f"field_size={field_size!r} is out of range", "choose 128 <= field_size <= 2048"
        )
    if cells_per_field is None:
        cells_per_field = max(1, round(1.4 * (field_size / _BASE) ** 2))
    if cells_per_field < 0:
        raise SparsecellError("cells_per_field must be >= 0", "pass a count of cells")
    lay = _layout(genotypes, lines_per_genotype, plates, wells_per_plate, seed)
    n_slots = len(lay["slot_plate"])
    slot = lay["slot_order"][np.arange(n_fields) % n_slots]
    field_no = np.arange(n_fields) // n_slots + 1
    tasks = [
        dict(
            seed=seed,
            field=i,
            size=int(field_size),
            n_cells=int(cells_per_field),
            line=int(lay["slot_line"][slot[i]]),
            geno=int(lay["line_geno"][lay["slot_line"][slot[i]]]),
            gain=lay["gain"][slot[i]],
            bg=lay["bg"][slot[i]],
            vignette=float(lay["vignette"][lay["slot_plate"][slot[i]]]),
            profiles=lay["profiles"],
            lines=lay["line_eff"],
        )
        for i in range(n_fields)
    ]
    rows, cell_tables = [], []
    with atomic_dir(out) as tmp:
        (tmp / "fields").mkdir()
        for i, (img, cells) in enumerate(_run(_field_task, tasks, n_jobs, progress, "fields")):
            s = slot[i]
            plate, well = int(lay["slot_plate"][s]) + 1, lay["slot_well"][s]
            line_i = int(lay["slot_line"][s])
            name = f"fields/p{plate}_{well}_f{field_no[i]:03d}.tif"
            data = np.rint(img * 65535.0).astype(np.uint16)
            tifffile.imwrite(
                tmp / name,
                data,
                photometric="minisblack",
                metadata={"axes": "CYX", "channels": list(CHANNELS)},
            )
            meta = dict(
                file=name,
                plate=plate,
                well=well,
                field=int(field_no[i]),
                line=lay["line_names"][line_i],
                genotype=genotypes[int(lay["line_geno"][line_i])],
            )
            rows.append({**meta, "channels": ",".join(CHANNELS)})
            cells.insert(0, "cell", np.arange(len(cells)))
            for k, v in reversed(meta.items()):
                cells.insert(0, k, v)
            cell_tables.append(cells)
        meta_df = pd.DataFrame(rows)
        meta_df.to_csv(tmp / "metadata.csv", index=False)
        pd.concat(cell_tables, ignore_index=True).to_csv(tmp / "cells.csv", index=False)
        config = dict(
            n_fields=int(n_fields),
            field_size=int(field_size),
            genotypes=list(genotypes),
            lines_per_genotype=int(lines_per_genotype),
            plates=int(plates),
            wells_per_plate=wells_per_plate,
            cells_per_field=int(cells_per_field),
            seed=int(seed),
        )
        atomic_write_text(
            tmp / "manifest.json",
            dump_json(manifest("phantom_fields", config, channels=list(CHANNELS))),
        )
    return meta_df


def phantom_factors(
    n_cells: int = 2000,
    *,
    genotypes: Sequence[str] = GENOTYPES,
    lines_per_genotype: int = 3,
    plates: int = 2,
    wells_per_plate: int | None = None,
    size: int = 128,
    seed: int = 0,
) -> pd.DataFrame:
    """The phantom's ground-truth factors for ``n_cells`` cells, without rendering images.

    Draws exactly the per-cell causes that :func:`phantom` draws for the same arguments
    and seed (same layout, same per-chunk random streams), so
    ``phantom_factors(n, seed=s)`` equals ``phantom(n, seed=s).obs`` in every column
    except ``cell_death_rate``, which is measured from rendered images and is left out
    (``gt_death_hazard`` is the ground-truth cell-death rate, ``gt_dead`` the cell's
    state). Thousands of times faster than rendering: use it to drive simulated
    modalities (e.g. :func:`sparsecell.datasets.simulate_scrna`) of the same cells.

    Parameters
    ----------
    n_cells
        Number of cells (units).
    genotypes, lines_per_genotype, plates, wells_per_plate, seed
        As in :func:`phantom`.
    size
        Unit size in pixels; only the ``y``, ``x`` positions in the virtual field depend
        on it (as in :func:`phantom`).

    Returns
    -------
    pandas.DataFrame
        Index ``"u0"``, ...; ``genotype`` (categorical), ``line``, ``plate``, ``well``,
        ``field``, ``y``, ``x`` and the ``gt_`` columns (58 factors and the derived
        ``gt_dead``, ``gt_death_hazard``, ``gt_neighbours_dead``).
    """
    genotypes, lay, place = _setup(
        "n_cells", n_cells, size, genotypes, lines_per_genotype, plates, wells_per_plate, seed
    )
    n_cells = int(n_cells)
    line = place[4]  # the same placement as phantom()
    gts: dict[str, np.ndarray] = {}
    for ci, start in enumerate(range(0, n_cells, _CHUNK)):
        sl = slice(start, min(start + _CHUNK, n_cells))
        # the first draws of phantom's _unit_chunk: the main cells, then their neighbours
        crng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, ci)))
        geno = lay["line_geno"][line[sl]]
        main, owner, nb = _draw_unit_cells(crng, geno, line[sl], lay["profiles"], lay["line_eff"])
        for key, val in _unit_truth(main, owner, nb).items():
            gts.setdefault(key, np.empty(n_cells, val.dtype))[sl] = val
    return _obs_table(genotypes, lay, place, gts)


# --------------------------------------------------------------------------- layout


def _check_common(genotypes, lines_per_genotype, plates, wells_per_plate, seed) -> list[str]:
    if isinstance(genotypes, str):
        genotypes = [genotypes]
    genotypes = list(genotypes)
    unknown = [g for g in genotypes if g not in _PROFILES]
    if not genotypes or unknown or len(set(genotypes)) != len(genotypes):
        raise SparsecellError(
            f"genotypes={genotypes!r} is not a list of distinct known genotypes",
            f"choose from {list(GENOTYPES)}",
        )
    for name, v, lo in (("lines_per_genotype", lines_per_genotype, 1), ("plates", plates, 1)):
        if not isinstance(v, int | np.integer) or v < lo:
            raise SparsecellError(f"{name}={v!r} is not a positive integer", f"pass {name} >= 1")
    n_lines = len(genotypes) * lines_per_genotype
    if wells_per_plate is not None:
        if not isinstance(wells_per_plate, int | np.integer) or not 1 <= wells_per_plate <= 384:
            raise SparsecellError(
                f"wells_per_plate={wells_per_plate!r} is out of range", "choose 1 to 384 wells"
            )
        if plates * wells_per_plate < n_lines:
            raise SparsecellError(
                f"{plates} plates x {wells_per_plate} wells cannot hold {n_lines} lines",
                "use more wells or plates, or fewer lines",
            )
    elif n_lines > 384:
        raise SparsecellError(f"{n_lines} lines do not fit a 384-well plate", "use fewer lines")
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise SparsecellError(f"seed={seed!r} is not a non-negative integer", "pass seed >= 0")
    return genotypes


def _well_name(w: int, n_wells: int) -> str:
    cols = 12 if n_wells <= 96 else 24
    return f"{'ABCDEFGHIJKLMNOP'[w // cols]}{w % cols + 1:02d}"


def _layout(genotypes, lines_per_genotype, plates, wells_per_plate, seed) -> dict[str, Any]:
    """Lines, their effects, the plate map and the plate/well imaging effects (seed only)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    G = len(genotypes)
    n_lines = G * lines_per_genotype
    wells = wells_per_plate or n_lines
    profiles = np.array(
        [[{**_PROFILE_DEFAULTS, **_PROFILES[g]}[k] for k in _PKEYS] for g in genotypes]
    )
    line_geno = np.repeat(np.arange(G), lines_per_genotype)
    line_names = [f"{g}-{j + 1}" for g in genotypes for j in range(lines_per_genotype)]
    line_eff = rng.standard_normal((n_lines, len(_LKEYS))) * np.array([_LINE_SD[k] for k in _LKEYS])
    slot_plate = np.repeat(np.arange(plates), wells)
    slot_w = np.tile(np.arange(wells), plates)
    # lines fill the wells in order, continuing across plates; when every plate holds whole
    # sets of lines, each plate's layout is shifted by one well (position is not the line)
    shift = slot_plate if wells % n_lines == 0 else 0
    slot_line = (slot_plate * wells + slot_w + shift) % n_lines
    slot_well = [_well_name(int(w), wells) for w in slot_w]
    plate_gain = np.exp(rng.normal(0, 0.12, (plates, 4)))
    plate_bg = rng.uniform(0.015, 0.045, (plates, 4)) * np.array([1.0, 1.0, 1.0, 0.6])
    vignette = rng.uniform(0.08, 0.22, plates)
    well_gain = np.exp(rng.normal(0, 0.06, (plates * wells, 4)))
    well_bg = rng.normal(0, 0.004, (plates * wells, 4))
    # an order of the slots that cycles through genotypes first, then plates, then lines
    # and wells: a prefix of it is as balanced as it can be
    slot_order = np.lexsort(
        (
            np.arange(slot_plate.size),
            line_geno[slot_line],
            slot_plate,
            slot_line % lines_per_genotype,
        )
    )
    return dict(
        slot_order=slot_order,
        profiles=profiles,
        line_geno=line_geno,
        line_names=line_names,
        line_eff=line_eff,
        slot_plate=slot_plate,
        slot_line=slot_line,
        slot_well=slot_well,
        gain=plate_gain[slot_plate] * well_gain,
        bg=np.clip(plate_bg[slot_plate] + well_bg, 0.003, None),
        vignette=vignette,
    )


def _setup(name, n, size, genotypes, lines_per_genotype, plates, wells_per_plate, seed):
    """Checked arguments, the plate/line layout and the units' placement (see _placement)."""
    genotypes = _check_common(genotypes, lines_per_genotype, plates, wells_per_plate, seed)
    if not isinstance(n, int | np.integer) or n < 1:
        raise SparsecellError(f"{name}={n!r} is not a positive integer", f"pass {name} >= 1")
    if not isinstance(size, int | np.integer) or not 16 <= size <= 1024:
        raise SparsecellError(f"size={size!r} is out of range", "choose 16 <= size <= 1024")
    lay = _layout(genotypes, lines_per_genotype, plates, wells_per_plate, seed)
    return genotypes, lay, _placement(lay, int(n), int(size), seed)


def _obs_table(genotypes, lay, place, gts, **measured) -> pd.DataFrame:
    """The units' obs: design columns, ``measured`` columns (e.g. cell_death_rate), gt_*."""
    slot, field_no, y, x, line = place
    obs = pd.DataFrame(
        {
            "genotype": pd.Categorical(
                np.asarray(genotypes, dtype=object)[lay["line_geno"][line]],
                categories=list(genotypes),
            ),
            "line": np.asarray(lay["line_names"], dtype=object)[line],
            "plate": lay["slot_plate"][slot] + 1,
            "well": np.asarray(lay["slot_well"], dtype=object)[slot],
            "field": field_no,
            "y": y,
            "x": x,
            **measured,
        },
        index=pd.Index([f"u{i}" for i in range(len(slot))]),
    )
    for key in (*FACTORS, *_DERIVED):
        obs[key] = gts[key]
    return obs


def _placement(lay: dict[str, Any], n: int, size: int, seed: int) -> tuple[np.ndarray, ...]:
    """Units -> (plate, well) slots, balanced; fields fill with 8 x 8 tiles in unit order.

    Returns ``slot``, ``field_no`` (1-based), the unit centre ``y``, ``x`` in its field and
    the ``line`` of each unit. Shared by :func:`phantom` and :func:`phantom_factors`, so both
    place (and therefore draw) the same cells.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    n_slots = len(lay["slot_plate"])
    slot = rng.permutation(lay["slot_order"][np.arange(n) % n_slots])
    rank = np.zeros(n, np.int64)
    for s in range(n_slots):
        idx = np.flatnonzero(slot == s)
        rank[idx] = np.arange(idx.size)
    per_field = _TILES * _TILES
    field_no = rank // per_field + 1
    tile = rank % per_field
    y = (tile // _TILES) * size + size // 2
    x = (tile % _TILES) * size + size // 2
    return slot, field_no, y, x, lay["slot_line"][slot]


def _run(fn, tasks, n_jobs, progress, desc):
    """Map ``fn`` over ``tasks`` in order, optionally in worker processes.

    Workers are forked where the platform can (they only run numpy and scipy), so a
    script needs no ``if __name__ == "__main__"`` guard there; elsewhere they are spawned.
    At most two tasks per worker are in flight, which bounds memory.
    """
    from tqdm.auto import tqdm

    if n_jobs is None or n_jobs == 0:
        n_jobs = 1
    if n_jobs < 0:
        n_jobs = os.cpu_count() or 1
    if n_jobs == 1 or len(tasks) <= 1:
        with tqdm(total=len(tasks), disable=not progress, desc=desc, unit="chunk") as bar:
            for t in tasks:
                yield fn(t)
                bar.update()
        return
    import collections
    import itertools
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    workers = min(n_jobs, len(tasks))
    todo = iter(tasks)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as ex:
        # the first submissions start the workers, before the progress bar starts a thread
        pending = collections.deque(ex.submit(fn, t) for t in itertools.islice(todo, 2 * workers))
        with tqdm(total=len(tasks), disable=not progress, desc=desc, unit="chunk") as bar:
            while pending:
                result = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(ex.submit(fn, nxt))
                yield result
                bar.update()


# --------------------------------------------------------------------------- cells


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _draw_cells(rng, geno, line, profiles, lines) -> dict[str, np.ndarray]:
    """Per-cell factors (in 128-pixel-unit geometry) and hidden drawing parameters."""
    n = len(geno)
    P = {k: profiles[geno, i] for i, k in enumerate(_PKEYS)}
    L = {k: lines[line, i] for i, k in enumerate(_LKEYS)}

    def unif(a, b):
        return rng.uniform(a, b, n)

    def nrm(s):
        return rng.normal(0.0, s, n)

    def bern(p):
        return rng.random(n) < p

    def pois(lam):
        return rng.poisson(np.broadcast_to(lam, (n,)))

    f: dict[str, np.ndarray] = {}
    prog = np.clip(rng.beta(P["prog_a"], P["prog_b"]) + L["prog"], 0.0, 1.0)
    stress = P["stress"] * prog
    f["gt_progression"] = prog
    hazard = _sigmoid(-3.3 + P["death"] + L["death"] + 3.2 * stress)
    stage = np.where(rng.random(n) < hazard, unif(0.05, 1.0), 0.0)
    f["gt_death_hazard"] = hazard
    f["gt_death_stage"] = stage
    f["gt_dead"] = stage >= _DEAD_STAGE

    f["gt_soma_size"] = 19.0 * np.exp(nrm(0.11) + L["soma"])
    f["gt_soma_elongation"] = np.exp(np.abs(nrm(0.2)))
    f["gt_soma_angle"] = unif(0, np.pi)
    f["gt_cell_dy"] = np.clip(nrm(7.0), -18, 18)
    f["gt_cell_dx"] = np.clip(nrm(7.0), -18, 18)
    f["gt_nucleus_ratio"] = np.clip(0.53 * np.exp(nrm(0.08)), 0.38, 0.72)
    f["gt_nucleus_elongation"] = np.exp(np.abs(nrm(0.12)))
    f["gt_nucleus_offset"] = unif(0.0, 0.4)
    f["gt_nucleus_intensity"] = np.exp(nrm(0.15))
    f["gt_chromatin_texture"] = unif(0.08, 0.4)
    f["gt_chromatin_scale"] = unif(0.0, 1.0)
    f["gt_nucleoli"] = np.minimum(pois(1.3), 4)

    pot = np.clip(1 + P["potential"] + L["potential"] - 0.3 * stress + nrm(0.11), 0.15, 1.6)
    f["gt_mito_potential"] = pot
    frag = _sigmoid(math.log(0.12 / 0.88) + P["frag"] + L["frag"] + 2.4 * stress + nrm(0.6))
    f["gt_mito_fragmentation"] = frag
    f["gt_mito_density"] = np.exp(nrm(0.2))
    f["gt_neurite_mito_density"] = np.exp(nrm(0.3))
    f["gt_mito_perinuclear"] = bern(0.06 + 0.2 * stress) * unif(0.4, 1.0)
    f["gt_mito_hyperfused"] = bern(0.07 * (1 - stress)) * unif(0.4, 1.0)
    f["gt_mito_megamito"] = bern(0.05) * (1 + pois(0.7))
    f["gt_mito_donuts"] = bern(0.06 + 0.1 * stress) * (1 + pois(2.0))
    f["gt_mito_swollen"] = bern(0.05 + 0.1 * stress) * (1 + pois(2.5))
    f["gt_mito_clump"] = bern(0.04 + 0.08 * stress) * unif(3.5, 7.0)
    f["gt_mito_depolarised"] = bern(0.07 + 0.08 * stress) * unif(0.25, 0.7)
    f["gt_mito_polarity"] = bern(0.09) * unif(0.5, 1.0)

    lam = 13.0 * np.exp(P["lyso_load"] + L["lyso_load"] + 0.5 * stress + nrm(0.22))
    f["gt_lyso_count"] = pois(lam)
    f["gt_lyso_size"] = np.exp(P["lyso_size"] + 0.15 * stress + nrm(0.12))
    f["gt_lyso_perinuclear"] = _sigmoid(-1.0 + P["lyso_peri"] + 1.2 * stress + nrm(0.7))
    f["gt_lyso_intensity"] = np.exp(nrm(0.18))
    f["gt_lyso_enlarged"] = bern(0.04 * np.exp(P["lyso_enlarged"]) + 0.05 * stress) * (
        1 + pois(1.2)
    )
    f["gt_lyso_cluster"] = bern(0.06 * np.exp(P["lyso_cluster"])) * (6 + pois(6.0))
    f["gt_lyso_neuritic"] = bern(0.15) * (2 + pois(4.0))
    f["gt_lyso_rings"] = bern(0.06) * (1 + pois(1.5))
    f["gt_lyso_tubular"] = bern(0.06) * (1 + pois(3.0))
    f["gt_autophagosomes"] = bern(0.06 * np.exp(P["autophagy"]) + 0.05 * stress) * (1 + pois(3.0))
    f["gt_lyso_leakage"] = bern(0.03 + 0.07 * stress) * unif(0.04, 0.15)

    f["gt_neurite_count"] = np.minimum(1 + pois(2.3), 7)
    f["gt_neurite_length"] = np.clip(
        75.0 * np.exp(P["neurite_length"] + L["neurite_length"] - 0.35 * stress + nrm(0.25)),
        15.0,
        200.0,
    )
    f["gt_neurite_branches"] = np.minimum(pois(0.35 * f["gt_neurite_count"] * np.exp(nrm(0.4))), 8)
    f["gt_neurite_thickness"] = unif(0.6, 1.5)
    f["gt_neurite_tortuosity"] = unif(0.03, 0.25)
    f["gt_neurite_integrity"] = _sigmoid(2.6 - 3.0 * stress + nrm(0.9))
    f["gt_neurite_swellings"] = bern(0.07 + 0.15 * stress) * (1 + pois(2.0))
    f["gt_growth_cones"] = bern(0.15) * np.minimum(1 + pois(0.8), f["gt_neurite_count"])

    f["gt_chromocenters"] = bern(0.12) * (3 + pois(4.0))
    f["gt_micronuclei"] = bern(0.04) * (1 + bern(0.3))
    f["gt_nuclear_bleb"] = bern(0.04) * unif(0.25, 0.45)
    f["gt_nuclear_invagination"] = bern(0.05) * unif(0.5, 0.9)
    f["gt_binucleate"] = bern(0.02).astype(np.int64)

    snca_like = P["inclusion"] > 1.0
    f["gt_inclusion"] = bern(0.025 * np.exp(P["inclusion"]) + 0.04 * stress * snca_like) * unif(
        3.5, 6.5
    )
    f["gt_lipofuscin"] = bern(0.05 * np.exp(P["lipofuscin"]) + 0.05 * stress) * (2 + pois(5.0))
    f["gt_vacuoles"] = bern(0.05) * (1 + pois(1.5))
    f["gt_debris"] = bern(0.1) * (1 + pois(3.0))

    # canvas-level factors (used for a unit's main cell only)
    f["gt_neighbours"] = np.minimum(pois(0.9), 3)
    f["gt_crossing_neurites"] = np.minimum(pois(0.6), 4)
    f["gt_defocus"] = bern(0.04) * unif(0.8, 2.2)
    f["gt_dust"] = bern(0.03) * unif(0.1, 0.3)

    # hidden drawing parameters (not factors: shape details, phases)
    f["soma_h"] = rng.normal(0, 1, (n, 6)) * np.array([0.06, 0.06, 0.04, 0.04, 0.03, 0.03])
    f["nuc_h"] = (
        rng.normal(0, 1, (n, 6))
        * np.array([0.04, 0.04, 0.025, 0.025, 0.015, 0.015])
        * (1 - stage)[:, None]
    )
    f["nuc_angle"] = f["gt_soma_angle"] + nrm(0.4)
    f["nuc_off_angle"] = unif(0, 2 * np.pi)
    f["nuc_fragmented"] = (stage > 0.75) & bern(0.5)
    f["tex_offset"] = rng.integers(0, 1 << 20, (n, 2))
    f["dead_fill"] = 0.75 * np.clip((stage - 0.3) / 0.45, 0, 1) * np.exp(nrm(0.15))
    for key, val in f.items():
        if val.dtype == bool and key != "gt_dead" and key != "nuc_fragmented":
            f[key] = val.astype(np.float64)
    return f


# --------------------------------------------------------------------------- rendering


def _radius(c, s, R, e, ca, sa, h):
    """Radius of a harmonic ellipse in the direction (cos, sin) = (c, s); all broadcast."""
    ct = c * ca + s * sa
    st = s * ca - c * sa
    r = R / np.sqrt(ct * ct / e + e * st * st)
    c2 = 2 * c * c - 1
    s2 = 2 * s * c
    c3 = c * (4 * c * c - 3)
    s3 = s * (3 - 4 * s * s)
    c4 = 2 * c2 * c2 - 1
    s4 = 2 * s2 * c2
    return r * (1 + h[0] * c2 + h[1] * s2 + h[2] * c3 + h[3] * s3 + h[4] * c4 + h[5] * s4)


def _rank_within(counts):
    """For ``np.repeat(arange(n), counts)``: the rank of each copy within its group."""
    first = np.cumsum(counts) - counts
    return np.arange(int(counts.sum())) - np.repeat(first, counts)


def _col(a):
    return np.asarray(a, np.float32)[:, None, None]


def _hcols(h):
    return [np.asarray(h[:, j], np.float32)[:, None, None] for j in range(6)]


def _hrows(h, idx):
    return [h[idx, j] for j in range(6)]


class _Canvas:
    """Accumulates window-rasterised shapes and splatted points for a batch of canvases."""

    def __init__(self, n: int, H: int, W: int) -> None:
        self.n, self.H, self.W = n, H, W
        self.size = n * H * W
        self.dense = np.zeros((4, self.size), np.float64)
        self.pts: list[list[tuple]] = [[] for _ in range(4)]

    # windows ---------------------------------------------------------------
    def window(self, b, cy, cx, win):
        """Local offsets (dy, dx) of square windows around (cy, cx) and their flat indices."""
        half = win // 2
        ar = np.arange(win)
        iy = np.rint(cy).astype(np.int64)[:, None] - half + ar
        ix = np.rint(cx).astype(np.int64)[:, None] - half + ar
        dy = (iy - cy[:, None]).astype(np.float32)[:, :, None]
        dx = (ix - cx[:, None]).astype(np.float32)[:, None, :]
        okv = (iy >= 0) & (iy < self.H)
        okh = (ix >= 0) & (ix < self.W)
        valid = okv[:, :, None] & okh[:, None, :]
        flat = (b[:, None, None] * self.H + iy[:, :, None]) * self.W + ix[:, None, :]
        return dy, dx, valid, flat[valid]

    def add_window(self, ch, valid, flat, vals):
        self.dense[ch] += np.bincount(flat, weights=vals[valid], minlength=self.size)

    # points ------------------------------------------------------------------
    def points(self, ch, b, y, x, amp, sigma, step=None):
        """Gaussian spots of peak ``amp`` (or line samples ``step`` apart of peak ``amp``)."""
        b, y, x = np.broadcast_arrays(b, y, x)
        amp = np.broadcast_to(amp, y.shape)
        sigma = np.broadcast_to(sigma, y.shape)
        if y.size == 0:
            return
        sig = np.clip(sigma, _LEVELS[0], _LEVELS[-1])
        mass = amp * 2 * np.pi * sig * sig if step is None else amp * 2.5066 * sig * step
        self.pts[ch].append((b.ravel(), y.ravel(), x.ravel(), mass.ravel(), sig.ravel()))

    def render(self) -> np.ndarray:
        n, H, W = self.n, self.H, self.W
        out = self.dense.reshape(4, n, H, W).astype(np.float32)
        nl = len(_LEVELS)
        for ch in range(4):
            if not self.pts[ch]:
                continue
            b, y, x, m, s = (np.concatenate(z) for z in zip(*self.pts[ch], strict=True))
            keep = (y > -8) & (y < H + 7) & (x > -8) & (x < W + 7) & (m != 0)
            b, y, x, m, s = b[keep], y[keep], x[keep], m[keep], s[keep]
            lv = np.clip(np.log(s / _LEVELS[0]) / _LOG_STEP, 0, nl - 1 - 1e-6)
            lo = lv.astype(np.int64)
            w = lv - lo
            y0 = np.floor(y).astype(np.int64)
            x0 = np.floor(x).astype(np.int64)
            fy, fx = y - y0, x - x0
            idx, wts = [], []
            for dl, wl in ((0, 1 - w), (1, w)):
                for oy, wy in ((0, 1 - fy), (1, fy)):
                    for ox, wx in ((0, 1 - fx), (1, fx)):
                        yy, xx = y0 + oy, x0 + ox
                        ok = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
                        lvl = np.minimum(lo + dl, nl - 1)
                        idx.append((((lvl * n + b) * H + yy) * W + xx)[ok])
                        wts.append((m * wl * wy * wx)[ok])
            acc = np.bincount(
                np.concatenate(idx), weights=np.concatenate(wts), minlength=nl * n * H * W
            )
            acc = acc.reshape(nl, n, H, W).astype(np.float32)
            used = np.zeros(nl, bool)
            used[np.unique(np.concatenate([lo, np.minimum(lo + 1, nl - 1)]))] = True
            cur = None
            for lvl in range(nl - 1, -1, -1):
                if used[lvl]:
                    cur = acc[lvl] if cur is None else cur + acc[lvl]
                if cur is not None:
                    sig = (
                        math.sqrt(_LEVELS[lvl] ** 2 - _LEVELS[lvl - 1] ** 2)
                        if lvl > 0
                        else _LEVELS[0]
                    )
                    cur = ndimage.gaussian_filter(cur, (0, sig, sig), mode="constant", truncate=3.0)
            if cur is not None:
                out[ch] += cur
        return np.ascontiguousarray(out.transpose(1, 0, 2, 3))


def _texture_bank(rng, side, k):
    """Three unit-variance band-limited noise images (fine, medium, coarse chromatin)."""
    bank = np.empty((3, side, side), np.float32)
    for i, s in enumerate((0.8, 1.6, 3.2)):
        z = ndimage.gaussian_filter(
            rng.standard_normal((side, side)).astype(np.float32), max(s * k, 0.5), mode="wrap"
        )
        bank[i] = (z - z.mean()) / z.std()
    return bank


def _gather_tex(bank, scale, offs, win):
    side = bank.shape[1]
    pos = np.clip(scale, 0, 1) * 2
    lo = np.minimum(pos.astype(np.int64), 1)
    w = (pos - lo).astype(np.float32)[:, None, None]
    oy = (offs[:, 0] % (side - win))[:, None, None] + np.arange(win)[None, :, None]
    ox = (offs[:, 1] % (side - win))[:, None, None] + np.arange(win)[None, None, :]
    return (1 - w) * bank[lo[:, None, None], oy, ox] + w * bank[lo[:, None, None] + 1, oy, ox]


def _tubules(cv, ch, b, y, x, ang, length, curv, amp, sigma, m=6):
    """Curved tubules (mitochondria) as ``m`` line samples each."""
    if len(y) == 0:
        return
    t = np.linspace(-0.5, 0.5, m)[None, :]
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]
    L = length[:, None]
    bend = curv[:, None] * (t * t - 1 / 12) * L * L
    py = y[:, None] + t * L * s + bend * c
    px = x[:, None] + t * L * c - bend * s
    step = np.maximum(length / (m - 1), 0.0)
    # a fragment shorter than its width keeps the peak of a round spot
    eff = np.maximum(step, 2.5066 * sigma / m)[:, None]
    cv.points(ch, b[:, None], py, px, amp[:, None], np.broadcast_to(sigma, y.shape)[:, None], eff)


def _rings(cv, ch, b, y, x, radius, amp, sigma, m=10, rng=None):
    if len(y) == 0:
        return
    phase = rng.uniform(0, 2 * np.pi, len(y))[:, None]
    a = phase + np.linspace(0, 2 * np.pi, m, endpoint=False)[None, :]
    cv.points(
        ch,
        b[:, None],
        y[:, None] + radius[:, None] * np.sin(a),
        x[:, None] + radius[:, None] * np.cos(a),
        amp[:, None],
        sigma,
        (2 * np.pi * radius / m)[:, None],
    )


def _dying(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What death does to a cell's appearance (the gt_ columns keep the causes)."""
    st = f["gt_death_stage"]
    g = dict(f)
    g["gt_soma_size"] = f["gt_soma_size"] * (1 - 0.3 * st)
    g["gt_nucleus_ratio"] = f["gt_nucleus_ratio"] * (1 - 0.35 * st)
    g["gt_nucleus_intensity"] = f["gt_nucleus_intensity"] * (1 + 1.6 * st)
    g["gt_chromatin_texture"] = f["gt_chromatin_texture"] * (1 - 0.7 * st)
    g["gt_nucleoli"] = np.where(st > 0.5, 0, f["gt_nucleoli"])
    g["gt_mito_potential"] = f["gt_mito_potential"] * (1 - 0.85 * st)
    frag = f["gt_mito_fragmentation"]
    g["gt_mito_fragmentation"] = frag + (1 - frag) * st
    g["gt_lyso_intensity"] = f["gt_lyso_intensity"] * (1 - 0.5 * st)
    g["gt_neurite_length"] = f["gt_neurite_length"] * (1 - 0.5 * st)
    integ = np.clip(f["gt_neurite_integrity"], 1e-6, 1 - 1e-6)
    g["gt_neurite_integrity"] = _sigmoid(np.log(integ / (1 - integ)) - 5.0 * st)
    return g


def _render(rng, f, cy, cx, n_canvas, H, W, k, canvas_of, extras) -> np.ndarray:
    """Draw cells (factors ``f``, centres ``cy``, ``cx`` on canvas ``canvas_of``)."""
    cv = _Canvas(n_canvas, H, W)
    n = len(cy)
    f = _dying(f)
    b = canvas_of.astype(np.int64)
    Rs = f["gt_soma_size"] * k
    es = f["gt_soma_elongation"]
    sa = f["gt_soma_angle"]
    Rn = Rs * f["gt_nucleus_ratio"]
    en = f["gt_nucleus_elongation"]
    na = f["nuc_angle"]
    off = f["gt_nucleus_offset"] * np.maximum(Rs - Rn, 0)
    ny = cy + off * np.sin(f["nuc_off_angle"])
    nx = cx + off * np.cos(f["nuc_off_angle"])
    psi = f["gt_mito_potential"]
    amp_m = 0.42 * psi
    lyso_int = f["gt_lyso_intensity"]
    edge = max(1.4 * k, 0.7)

    def soma_r(c, s, idx):
        return _radius(
            c, s, Rs[idx], es[idx], np.cos(sa[idx]), np.sin(sa[idx]), _hrows(f["soma_h"], idx)
        )

    def nuc_r(c, s, idx):
        return _radius(
            c, s, Rn[idx], en[idx], np.cos(na[idx]), np.sin(na[idx]), _hrows(f["nuc_h"], idx)
        )

    def cyto_points(idx, theta, v):
        """Points in the cytoplasm of cells ``idx``: angle about the nucleus, radial fraction."""
        c, s = np.cos(theta), np.sin(theta)
        rn = nuc_r(c, s, idx)
        oy, ox = ny[idx] - cy[idx], nx[idx] - cx[idx]
        ds = soma_r(c, s, idx) - (oy * s + ox * c)
        gap = 0.8 * k
        r = rn + gap + v * np.maximum(ds - rn - 2 * gap, 0.5 * k)
        return ny[idx] + r * s, nx[idx] + r * c

    def soma_points(idx):
        """Area-uniform points anywhere over the soma (organelles above or below the nucleus)."""
        theta = rng.uniform(0, 2 * np.pi, idx.size)
        c, s = np.cos(theta), np.sin(theta)
        r = np.sqrt(rng.uniform(0, 1, idx.size)) * 0.9 * soma_r(c, s, idx)
        return cy[idx] + r * s, cx[idx] + r * c

    # holes (inclusion + vacuoles) in the cytoplasm: centre offsets from soma centre, radius
    n_vac = f["gt_vacuoles"].astype(np.int64)
    hmax = 1 + int(n_vac.max(initial=0))
    hole_y = np.zeros((n, hmax))
    hole_x = np.zeros((n, hmax))
    hole_r = np.full((n, hmax), -50.0)
    inc = f["gt_inclusion"] > 0
    if inc.any():
        idx = np.flatnonzero(inc)
        th = rng.uniform(0, 2 * np.pi, idx.size)
        rad = f["gt_inclusion"][idx] * k
        c, s = np.cos(th), np.sin(th)
        r = nuc_r(c, s, idx) + rad + 0.5 * k
        hole_y[idx, 0] = ny[idx] + r * s - cy[idx]
        hole_x[idx, 0] = nx[idx] + r * c - cx[idx]
        hole_r[idx, 0] = rad
    if n_vac.any():
        idx = np.repeat(np.arange(n), n_vac)
        j = 1 + _rank_within(n_vac)
        vy, vx = cyto_points(
            idx, rng.uniform(0, 2 * np.pi, idx.size), rng.uniform(0.2, 0.8, idx.size)
        )
        hole_y[idx, j] = vy - cy[idx]
        hole_x[idx, j] = vx - cx[idx]
        hole_r[idx, j] = rng.uniform(1.5, 3.0, idx.size) * k

    def push_out(idx, y, x):
        """Move points out of their cell's holes onto the hole rims."""
        if not (hole_r[idx] > 0).any():
            return y, x
        for j in range(hmax):
            hy, hx, hr = cy[idx] + hole_y[idx, j], cx[idx] + hole_x[idx, j], hole_r[idx, j]
            d = np.hypot(y - hy, x - hx)
            inside = (hr > 0) & (d < hr + 0.6 * k)
            if inside.any():
                fac = (hr[inside] + rng.uniform(0.6, 1.8, inside.sum()) * k) / np.maximum(
                    d[inside], 1e-3
                )
                y[inside] = hy[inside] + (y[inside] - hy[inside]) * fac
                x[inside] = hx[inside] + (x[inside] - hx[inside]) * fac
        return y, x

    # ---- soma windows: diffuse TMRM, lysosomal leakage, dead-cell cytoplasm
    rmax = float(np.max(Rs * np.sqrt(es) * 1.2, initial=4.0))
    win = 2 * int(math.ceil(rmax + 3 * edge)) + 1
    dy, dx, valid, flat = cv.window(b, cy, cx, win)
    rho = np.sqrt(dy * dy + dx * dx) + np.float32(1e-3)
    c, s = dx / rho, dy / rho
    rs = _radius(c, s, _col(Rs), _col(es), _col(np.cos(sa)), _col(np.sin(sa)), _hcols(f["soma_h"]))
    ms = np.clip((rs - rho) / edge + 0.5, 0, 1)
    dyn = dy - _col(ny - cy)
    dxn = dx - _col(nx - cx)
    rhon = np.sqrt(dyn * dyn + dxn * dxn) + np.float32(1e-3)
    rn = _radius(
        dxn / rhon,
        dyn / rhon,
        _col(Rn),
        _col(en),
        _col(np.cos(na)),
        _col(np.sin(na)),
        _hcols(f["nuc_h"]),
    )
    mn = np.clip((rn - rhon) / edge + 0.5, 0, 1)
    cyto = ms * (1 - 0.85 * mn)
    for j in range(hmax):
        if (hole_r[:, j] > 0).any():
            d = np.sqrt((dy - _col(hole_y[:, j])) ** 2 + (dx - _col(hole_x[:, j])) ** 2)
            cyto = cyto * (1 - np.clip((_col(hole_r[:, j]) - d) / (0.8 * k) + 0.5, 0, 1))
    cv.add_window(0, valid, flat, cyto * _col(0.07 * psi))
    cv.add_window(1, valid, flat, cyto * _col((0.012 + f["gt_lyso_leakage"]) * lyso_int))
    cv.add_window(3, valid, flat, ms * _col(0.08 * f["dead_fill"]))
    del dy, dx, rho, c, s, rs, ms, dyn, dxn, rhon, rn, mn, cyto

    # ---- nuclear objects: main nuclei, second nuclei, blebs, micronuclei, fragments
    frag_n = f["nuc_fragmented"]
    obj = dict(
        cell=np.arange(n),
        y=ny.copy(),
        x=nx.copy(),
        R=Rn * np.where(frag_n, 0.55, 1.0),
        e=en.copy(),
        a=na.copy(),
        main=np.ones(n, bool),
    )
    extra_parts = []
    bin_ = np.flatnonzero(f["gt_binucleate"] > 0)
    if bin_.size:
        th = rng.uniform(0, 2 * np.pi, bin_.size)
        d = 0.6 * Rn[bin_]
        obj["y"][bin_] -= d * np.sin(th)
        obj["x"][bin_] -= d * np.cos(th)
        obj["R"][bin_] *= 0.78
        extra_parts.append(
            (bin_, ny[bin_] + d * np.sin(th), nx[bin_] + d * np.cos(th), 0.78 * Rn[bin_])
        )
    bl = np.flatnonzero(f["gt_nuclear_bleb"] > 0)
    if bl.size:
        th = rng.uniform(0, 2 * np.pi, bl.size)
        r = nuc_r(np.cos(th), np.sin(th), bl) * 0.92
        extra_parts.append(
            (
                bl,
                ny[bl] + r * np.sin(th),
                nx[bl] + r * np.cos(th),
                f["gt_nuclear_bleb"][bl] * Rn[bl],
            )
        )
    mic = f["gt_micronuclei"].astype(np.int64)
    if mic.any():
        idx = np.repeat(np.arange(n), mic)
        th = rng.uniform(0, 2 * np.pi, idx.size)
        r = nuc_r(np.cos(th), np.sin(th), idx) + rng.uniform(2.5, 5.0, idx.size) * k
        extra_parts.append(
            (
                idx,
                ny[idx] + r * np.sin(th),
                nx[idx] + r * np.cos(th),
                rng.uniform(1.8, 3.0, idx.size) * k,
            )
        )
    if frag_n.any():
        nf = rng.integers(2, 5, n) * frag_n
        idx = np.repeat(np.arange(n), nf)
        th = rng.uniform(0, 2 * np.pi, idx.size)
        r = rng.uniform(0.5, 1.1, idx.size) * Rn[idx]
        extra_parts.append(
            (
                idx,
                ny[idx] + r * np.sin(th),
                nx[idx] + r * np.cos(th),
                rng.uniform(2.0, 3.5, idx.size) * k,
            )
        )
    if extra_parts:
        ei = np.concatenate([p[0] for p in extra_parts])
        obj["cell"] = np.concatenate([obj["cell"], ei])
        obj["y"] = np.concatenate([obj["y"], *[p[1] for p in extra_parts]])
        obj["x"] = np.concatenate([obj["x"], *[p[2] for p in extra_parts]])
        obj["R"] = np.concatenate([obj["R"], *[p[3] for p in extra_parts]])
        obj["e"] = np.concatenate([obj["e"], np.exp(np.abs(rng.normal(0, 0.1, ei.size)))])
        obj["a"] = np.concatenate([obj["a"], rng.uniform(0, np.pi, ei.size)])
        obj["main"] = np.concatenate([obj["main"], np.zeros(ei.size, bool)])
    oc = obj["cell"]
    no = len(oc)
    harm = np.where(obj["main"][:, None], f["nuc_h"][oc], 0.0)
    rmax = float(np.max(obj["R"] * np.sqrt(obj["e"]) * 1.1, initial=2.0))
    win = 2 * int(math.ceil(rmax + 3 * edge)) + 1
    dy, dx, valid, flat = cv.window(b[oc], obj["y"], obj["x"], win)
    rho = np.sqrt(dy * dy + dx * dx) + np.float32(1e-3)
    r = _radius(
        dx / rho,
        dy / rho,
        _col(obj["R"]),
        _col(obj["e"]),
        _col(np.cos(obj["a"])),
        _col(np.sin(obj["a"])),
        _hcols(harm),
    )
    nedge = np.float32(edge * 0.8)
    m = np.clip((r - rho) / nedge + 0.5, 0, 1)
    del r
    side = max(64, 2 * win + 8)
    bank = _texture_bank(rng, side, k)
    tex = _gather_tex(bank, f["gt_chromatin_scale"][oc], f["tex_offset"][oc], win)
    dark = np.zeros_like(m)
    n_nucleoli = np.where(obj["main"], f["gt_nucleoli"][oc], 0).astype(np.int64)
    sig2 = np.float32(2 * (1.7 * k) ** 2)
    for j in range(int(n_nucleoli.max(initial=0))):
        has = n_nucleoli > j
        th = rng.uniform(0, 2 * np.pi, no)
        rr = rng.uniform(0, 0.5, no) * obj["R"]
        ddy = dy - _col(rr * np.sin(th))
        ddx = dx - _col(rr * np.cos(th))
        dark += _col(0.5 * has) * np.exp(-(ddy * ddy + ddx * ddx) / sig2)
    inv = np.where(obj["main"], f["gt_nuclear_invagination"][oc], 0.0)
    if (inv > 0).any():
        sel = np.flatnonzero(inv > 0)
        th = rng.uniform(0, 2 * np.pi, sel.size)
        R = obj["R"][sel]
        uy, ux = _col(np.sin(th)), _col(np.cos(th))
        # segment from the rim (t = R) inwards to t = R (1 - depth)
        t = np.clip(dy[sel] * uy + dx[sel] * ux, _col(R * (1 - inv[sel])), _col(R))
        dd = (dy[sel] - t * uy) ** 2 + (dx[sel] - t * ux) ** 2
        dark[sel] += 0.7 * np.exp(-dd / np.float32(2 * (1.0 * k) ** 2))
    inten = 0.42 * f["gt_nucleus_intensity"][oc]
    contrast = f["gt_chromatin_texture"][oc]
    hoechst = m * _col(inten) * np.maximum(1 + _col(contrast) * tex, 0.05) * np.clip(1 - dark, 0, 1)
    cv.add_window(2, valid, flat, hoechst)
    dead = m * _col(f["dead_fill"][oc]) * np.maximum(1 + 0.45 * tex, 0.1)
    cv.add_window(3, valid, flat, dead + 0.03 * hoechst)
    del dy, dx, rho, m, tex, dark, hoechst, dead

    # chromocenters: bright foci in the main nucleus
    ncc = f["gt_chromocenters"].astype(np.int64)
    if ncc.any():
        idx = np.repeat(np.arange(n), ncc)
        th = rng.uniform(0, 2 * np.pi, idx.size)
        rr = np.sqrt(rng.uniform(0, 1, idx.size)) * 0.7 * Rn[idx]
        cv.points(
            2,
            b[idx],
            ny[idx] + rr * np.sin(th),
            nx[idx] + rr * np.cos(th),
            0.35 * f["gt_nucleus_intensity"][idx],
            1.1 * k,
        )

    # ---- mitochondria in the soma
    A_cyto = np.pi * (f["gt_soma_size"] ** 2) * (1 - f["gt_nucleus_ratio"] ** 2)
    n_m = rng.poisson(f["gt_mito_density"] * A_cyto / 18.0)
    idx = np.repeat(np.arange(n), n_m)
    nm = idx.size
    theta = rng.uniform(0, 2 * np.pi, nm)
    pol = f["gt_mito_polarity"][idx]
    polar = rng.random(nm) < pol
    theta = np.where(polar, f["nuc_off_angle"][idx] + np.pi + rng.normal(0, 0.7, nm), theta)
    v = np.sqrt(rng.uniform(0, 1, nm)) * (1 - 0.75 * f["gt_mito_perinuclear"][idx])
    my, mx = cyto_points(idx, theta, v)
    over = rng.random(nm) < 0.15
    my[over], mx[over] = soma_points(idx[over])
    my, mx = push_out(idx, my, mx)
    fragm = rng.random(nm) < f["gt_mito_fragmentation"][idx]
    hyper = ~fragm & (rng.random(nm) < f["gt_mito_hyperfused"][idx])
    length = (
        np.where(
            fragm,
            rng.uniform(0.3, 2.0, nm),
            np.where(hyper, rng.uniform(12, 22, nm), rng.uniform(3.5, 10, nm)),
        )
        * k
    )
    depol = rng.random(nm) < f["gt_mito_depolarised"][idx]
    amp = amp_m[idx] * np.exp(rng.normal(0, 0.2, nm)) * np.where(depol, 0.25, 1.0)
    amp = amp * np.where(fragm, 1.15, 1.0) * np.where(over, 0.6, 1.0)
    sig = np.where(fragm, 1.0, 0.85) * np.where(over, 1.3, 1.0) * k
    _tubules(
        cv,
        0,
        b[idx],
        my,
        mx,
        rng.uniform(0, np.pi, nm),
        length,
        rng.normal(0, 0.12 / k, nm),
        amp,
        sig,
    )

    # clumps of fragments, megamitochondria, swollen and donut mitochondria
    cl = np.flatnonzero(f["gt_mito_clump"] > 0)
    if cl.size:
        ccy, ccx = cyto_points(
            cl, rng.uniform(0, 2 * np.pi, cl.size), rng.uniform(0.1, 0.5, cl.size)
        )
        idx = np.repeat(cl, 18)
        jy = rng.normal(0, 1, idx.size) * np.repeat(f["gt_mito_clump"][cl] * 0.5 * k, 18)
        jx = rng.normal(0, 1, idx.size) * np.repeat(f["gt_mito_clump"][cl] * 0.5 * k, 18)
        cv.points(
            0, b[idx], np.repeat(ccy, 18) + jy, np.repeat(ccx, 18) + jx, amp_m[idx] * 0.9, 1.0 * k
        )
    for key, kind in (("gt_mito_megamito", 0), ("gt_mito_swollen", 1), ("gt_mito_donuts", 2)):
        cnt = f[key].astype(np.int64)
        if not cnt.any():
            continue
        idx = np.repeat(np.arange(n), cnt)
        q = idx.size
        py, px = cyto_points(idx, rng.uniform(0, 2 * np.pi, q), rng.uniform(0.1, 0.9, q))
        py, px = push_out(idx, py, px)
        if kind == 0:
            _tubules(
                cv,
                0,
                b[idx],
                py,
                px,
                rng.uniform(0, np.pi, q),
                rng.uniform(7, 13, q) * k,
                rng.normal(0, 0.05, q),
                amp_m[idx] * 0.8,
                1.8 * k,
            )
        elif kind == 1:
            cv.points(0, b[idx], py, px, amp_m[idx] * 0.55, rng.uniform(1.6, 2.3, q) * k)
        else:
            _rings(
                cv,
                0,
                b[idx],
                py,
                px,
                rng.uniform(1.8, 2.6, q) * k,
                amp_m[idx] * 0.8,
                0.8 * k,
                9,
                rng,
            )

    # ---- lysosomes in the soma
    nl = f["gt_lyso_count"].astype(np.int64)
    idx = np.repeat(np.arange(n), nl)
    q = idx.size
    peri = f["gt_lyso_perinuclear"][idx]
    ly, lx = cyto_points(idx, rng.uniform(0, 2 * np.pi, q), rng.beta(1.3, 1.0 + 4.0 * peri))
    over = rng.random(q) < 0.5 * (1 - peri)
    ly[over], lx[over] = soma_points(idx[over])
    ly, lx = push_out(idx, ly, lx)
    lsig = np.clip(0.8 * f["gt_lyso_size"][idx] * np.exp(rng.normal(0, 0.22, q)), 0.6, 2.6) * k
    lamp = 0.5 * lyso_int[idx] * np.exp(rng.normal(0, 0.3, q)) * np.where(over, 0.8, 1.0)
    cv.points(1, b[idx], ly, lx, lamp, lsig)
    ncl = f["gt_lyso_cluster"].astype(np.int64)
    if ncl.any():
        cells = np.flatnonzero(ncl)
        ccy, ccx = cyto_points(
            cells, rng.uniform(0, 2 * np.pi, cells.size), rng.uniform(0.05, 0.35, cells.size)
        )
        rep = ncl[cells]
        idx = np.repeat(cells, rep)
        q = idx.size
        cv.points(
            1,
            b[idx],
            np.repeat(ccy, rep) + rng.normal(0, 2.5 * k, q),
            np.repeat(ccx, rep) + rng.normal(0, 2.5 * k, q),
            0.5 * lyso_int[idx] * np.exp(rng.normal(0, 0.25, q)),
            1.0 * f["gt_lyso_size"][idx] * k,
        )
    for key in (
        "gt_autophagosomes",
        "gt_lyso_enlarged",
        "gt_lyso_rings",
        "gt_lyso_tubular",
        "gt_lipofuscin",
    ):
        cnt = f[key].astype(np.int64)
        if not cnt.any():
            continue
        idx = np.repeat(np.arange(n), cnt)
        q = idx.size
        vv = rng.beta(1.0, 3.0, q) if key == "gt_lipofuscin" else rng.uniform(0.05, 0.9, q)
        py, px = cyto_points(idx, rng.uniform(0, 2 * np.pi, q), vv)
        py, px = push_out(idx, py, px)
        if key == "gt_autophagosomes":
            cv.points(1, b[idx], py, px, 0.2 * lyso_int[idx], rng.uniform(1.8, 2.6, q) * k)
        elif key == "gt_lyso_enlarged":
            rad = rng.uniform(2.8, 4.5, q) * k
            _rings(cv, 1, b[idx], py, px, rad, 0.4 * lyso_int[idx], 0.9 * k, 12, rng)
            cv.points(1, b[idx], py, px, 0.12 * lyso_int[idx], 0.7 * rad)
        elif key == "gt_lyso_rings":
            _rings(
                cv,
                1,
                b[idx],
                py,
                px,
                rng.uniform(1.6, 2.3, q) * k,
                0.4 * lyso_int[idx],
                0.8 * k,
                8,
                rng,
            )
        elif key == "gt_lyso_tubular":
            _tubules(
                cv,
                1,
                b[idx],
                py,
                px,
                rng.uniform(0, np.pi, q),
                rng.uniform(3, 7, q) * k,
                rng.normal(0, 0.1 / k, q),
                0.4 * lyso_int[idx],
                0.8 * k,
                5,
            )
        else:  # lipofuscin: broad-spectrum autofluorescence
            gs = rng.uniform(0.9, 1.4, q) * k
            ga = rng.uniform(0.7, 1.3, q)
            cv.points(0, b[idx], py, px, 0.3 * ga, gs)
            cv.points(1, b[idx], py, px, 0.42 * ga, gs)
            cv.points(2, b[idx], py, px, 0.07 * ga, gs)
    if inc.any():  # lysosomal rim around the inclusion
        idx = np.repeat(np.flatnonzero(inc), 9)
        a = rng.uniform(0, 2 * np.pi, idx.size)
        rr = hole_r[idx, 0] + rng.uniform(0.8, 1.8, idx.size) * k
        cv.points(
            1,
            b[idx],
            cy[idx] + hole_y[idx, 0] + rr * np.sin(a),
            cx[idx] + hole_x[idx, 0] + rr * np.cos(a),
            0.4 * lyso_int[idx],
            0.9 * k,
        )

    # ---- neurites
    nn = f["gt_neurite_count"].astype(np.int64)
    pc = np.repeat(np.arange(n), nn)
    j = _rank_within(nn)
    phi0 = rng.uniform(0, 2 * np.pi, n)
    phi = phi0[pc] + 2 * np.pi * j / nn[pc] + rng.normal(0, 0.45, pc.size)
    cphi, sphi = np.cos(phi), np.sin(phi)
    r0 = soma_r(cphi, sphi, pc) * 0.85
    plen = (
        f["gt_neurite_length"][pc]
        * np.exp(rng.normal(0, 0.3, pc.size))
        * np.where(j == 0, 1.5, 1.0)
    )
    paths = dict(
        cell=pc,
        b=b[pc],
        y0=cy[pc] + r0 * sphi,
        x0=cx[pc] + r0 * cphi,
        h0=phi,
        L=np.minimum(plen, 260.0) * k,
        thick=f["gt_neurite_thickness"][pc] * k,
        tort=f["gt_neurite_tortuosity"][pc],
        amp=0.11 * psi[pc],
        mamp=amp_m[pc],
        mdens=f["gt_neurite_mito_density"][pc],
        integ=f["gt_neurite_integrity"][pc],
        root=np.ones(pc.size),
    )
    n_cross = extras["crossing"]
    if n_cross.sum():
        cb = np.repeat(np.arange(n_canvas), n_cross)
        q = cb.size
        side = rng.integers(0, 4, q)
        u = rng.uniform(0.1, 0.9, q)
        y0 = np.select(
            [side == 0, side == 1, side == 2], [np.zeros(q), np.full(q, H - 1.0), u * H], u * H
        )
        x0 = np.select(
            [side == 0, side == 1, side == 2], [u * W, u * W, np.zeros(q)], np.full(q, W - 1.0)
        )
        ty, tx = rng.uniform(0.25, 0.75, q) * H, rng.uniform(0.25, 0.75, q) * W
        pot = 0.9 * np.exp(rng.normal(0, 0.15, q))
        cross = dict(
            cell=np.full(q, -1),
            b=cb,
            y0=y0,
            x0=x0,
            h0=np.arctan2(ty - y0, tx - x0),
            L=rng.uniform(0.8, 1.5, q) * max(H, W),
            thick=rng.uniform(0.5, 1.1, q) * k,
            tort=rng.uniform(0.02, 0.1, q),
            amp=0.11 * pot,
            mamp=0.5 * pot,
            mdens=np.exp(rng.normal(0, 0.3, q)),
            integ=_sigmoid(rng.normal(2.0, 1.0, q)),
            root=np.zeros(q),
        )
        paths = {key: np.concatenate([paths[key], cross[key]]) for key in paths}
    step = 1.5 * k
    P = _walk(rng, paths, step)
    # branches from primary neurites of the cell
    nb = f["gt_neurite_branches"].astype(np.int64)
    if nb.any():
        bc = np.repeat(np.arange(n), nb)
        first = np.concatenate([[0], np.cumsum(nn)[:-1]])
        par = first[bc] + rng.integers(0, 1 << 30, bc.size) % nn[bc]
        tmax = np.maximum((P["len"][par] * rng.uniform(0.15, 0.7, bc.size)).astype(np.int64), 1)
        py, px, pth = P["y"][par, tmax], P["x"][par, tmax], P["th"][par, tmax]
        sign = np.where(rng.random(bc.size) < 0.5, -1.0, 1.0)
        br = dict(
            cell=bc,
            b=b[bc],
            y0=py,
            x0=px,
            h0=pth + sign * rng.uniform(0.35, 1.0, bc.size),
            L=paths["L"][par] * rng.uniform(0.25, 0.55, bc.size),
            thick=paths["thick"][par] * 0.7,
            tort=paths["tort"][par],
            amp=paths["amp"][par] * 0.8,
            mamp=paths["mamp"][par],
            mdens=paths["mdens"][par],
            integ=paths["integ"][par],
            root=np.zeros(bc.size),
        )
        B_ = _walk(rng, br, step)
        _draw_paths(cv, rng, br, B_, step, k)
    _draw_paths(cv, rng, paths, P, step, k)

    # objects placed along primary neurites of the cell: swellings, neuritic lysosomes, cones
    first = np.concatenate([[0], np.cumsum(nn)[:-1]]) if n else np.zeros(0, np.int64)

    def along(key, lo, hi):
        cnt = f[key].astype(np.int64)
        idx = np.repeat(np.arange(n), cnt)
        if idx.size == 0:
            return idx, None, None
        par = first[idx] + rng.integers(0, 1 << 30, idx.size) % nn[idx]
        t = np.minimum(
            (P["len"][par] * rng.uniform(lo, hi, idx.size)).astype(np.int64), P["y"].shape[1] - 1
        )
        return idx, P["y"][par, t], P["x"][par, t]

    idx, py, px = along("gt_neurite_swellings", 0.15, 0.9)
    if idx.size:
        sg = rng.uniform(1.8, 2.8, idx.size) * k
        cv.points(0, b[idx], py, px, 0.45 * amp_m[idx], sg)
        cv.points(1, b[idx], py, px, 0.25 * lyso_int[idx], sg)
    idx, py, px = along("gt_lyso_neuritic", 0.1, 0.95)
    if idx.size:
        cv.points(1, b[idx], py, px, 0.45 * lyso_int[idx], 0.95 * f["gt_lyso_size"][idx] * k)
    idx, py, px = along("gt_growth_cones", 0.999, 1.0)
    if idx.size:
        rep = np.repeat(np.arange(idx.size), 6)
        a = rng.uniform(0, 2 * np.pi, rep.size)
        rr = rng.uniform(0, 4.5, rep.size) * k
        cv.points(
            0,
            b[idx][rep],
            py[rep] + rr * np.sin(a),
            px[rep] + rr * np.cos(a),
            0.25 * amp_m[idx][rep],
            1.2 * k,
        )
        cv.points(1, b[idx][rep], py[rep] + rr * np.sin(a), px[rep] + rr * np.cos(a), 0.06, 1.2 * k)

    # ---- debris: dead-stain-positive DNA specks around the cell
    ndb = f["gt_debris"].astype(np.int64)
    if ndb.any():
        idx = np.repeat(np.arange(n), ndb)
        q = idx.size
        py = cy[idx] + rng.uniform(-60, 60, q) * k
        px = cx[idx] + rng.uniform(-60, 60, q) * k
        sg = rng.uniform(0.8, 1.8, q) * k
        cv.points(3, b[idx], py, px, rng.uniform(0.3, 0.7, q), sg)
        cv.points(2, b[idx], py, px, rng.uniform(0.1, 0.3, q), sg)
    return cv.render()


def _walk(rng, p, step):
    """Persistent random walks from (y0, x0) along heading h0; ``len`` = steps inside L."""
    q = len(p["y0"])
    T = int(math.ceil(float(np.max(p["L"], initial=step)) / step)) + 1
    dth = rng.standard_normal((q, T)) * p["tort"][:, None]
    dth[:, 0] = 0.0
    th = p["h0"][:, None] + np.cumsum(dth, axis=1)
    sy, sx = np.sin(th), np.cos(th)
    y = p["y0"][:, None] + step * (np.cumsum(sy, axis=1) - sy)
    x = p["x0"][:, None] + step * (np.cumsum(sx, axis=1) - sx)
    n_steps = np.minimum(np.ceil(p["L"] / step).astype(np.int64), T - 1)
    return dict(y=y, x=x, th=th, len=np.maximum(n_steps, 1))


def _draw_paths(cv, rng, p, w, step, k):
    """Neurites: diffuse TMRM (tapered, beaded, broken by low integrity) and their mitochondria."""
    q, T = w["y"].shape
    if q == 0:
        return
    t = np.arange(T)[None, :]
    s = t * step
    L = p["L"][:, None]
    integ = p["integ"][:, None]
    reach = w["len"][:, None] * (0.5 + 0.5 * np.sqrt(p["integ"]))[:, None]
    ok = t < reach
    taper = np.clip(1 - 0.5 * s / L, 0.4, 1)
    root = 1 + 1.2 * p["root"][:, None] * np.exp(-s / (5 * k))
    period = rng.uniform(5, 8, q)[:, None] * k
    bead = (1 - 0.55 * (1 - integ)) + 2.2 * (1 - integ) * (
        (1 + np.cos(2 * np.pi * s / period + rng.uniform(0, 6.3, q)[:, None])) / 2
    ) ** 6
    w1 = 2 * np.pi / (rng.uniform(30, 50, q) * k)[:, None]
    w2 = 2 * np.pi / (rng.uniform(12, 20, q) * k)[:, None]
    g = np.sin(w1 * s + rng.uniform(0, 6.3, q)[:, None]) + np.sin(
        w2 * s + rng.uniform(0, 6.3, q)[:, None]
    )
    ok &= g < 0.9 + 1.6 * integ
    amp = p["amp"][:, None] * taper * root * bead * ok
    sig = p["thick"][:, None] * taper * np.sqrt(root)
    bb = np.broadcast_to(p["b"][:, None], (q, T))
    cv.points(0, bb, w["y"], w["x"], amp, sig, step)
    cv.points(1, bb, w["y"], w["x"], 0.1 * amp, sig, step)
    # mitochondria along the neurite
    vis = w["len"] * step / k
    cnt = rng.poisson(p["mdens"] * 0.08 * vis)
    idx = np.repeat(np.arange(q), cnt)
    if idx.size == 0:
        return
    tt = (rng.uniform(0, 1, idx.size) * w["len"][idx]).astype(np.int64)
    keep = ok[idx, tt]
    idx, tt = idx[keep], tt[keep]
    m = idx.size
    _tubules(
        cv,
        0,
        p["b"][idx],
        w["y"][idx, tt],
        w["x"][idx, tt],
        w["th"][idx, tt],
        rng.uniform(2, 5.5, m) * k,
        np.zeros(m),
        p["mamp"][idx] * 0.85 * np.exp(rng.normal(0, 0.2, m)),
        0.8 * k,
        5,
    )


def _acquire(rng, signal, gain, bg, vignette, cy, cx, field_half, extras, k):
    """Imaging model: defocus, dust, vignetting, gain, background, shot and read noise."""
    n, C, H, W = signal.shape
    for i in np.flatnonzero(extras["defocus"] > 0):
        sgm = extras["defocus"][i] * k
        signal[i] = ndimage.gaussian_filter(signal[i], (0, sgm, sgm), mode="nearest")
    for i in np.flatnonzero(extras["dust"] > 0):
        ch = rng.integers(0, 3)
        sgm = rng.uniform(6, 14) * k
        yy, xx = rng.uniform(0, H), rng.uniform(0, W)
        g = np.exp(
            -((np.arange(H)[:, None] - yy) ** 2 + (np.arange(W)[None, :] - xx) ** 2) / (2 * sgm**2)
        )
        signal[i, ch] += (extras["dust"][i] * g).astype(np.float32)
    iy = (np.arange(H) - (H - 1) / 2)[None, :, None]
    ix = (np.arange(W) - (W - 1) / 2)[None, None, :]
    ry = (cy[:, None, None] + iy - field_half) / field_half
    rx = (cx[:, None, None] + ix - field_half) / field_half
    illum = (1 - vignette[:, None, None] * 0.5 * (ry * ry + rx * rx)).astype(np.float32)
    img = signal * gain[:, :, None, None].astype(np.float32) * illum[:, None]
    img += bg[:, :, None, None].astype(np.float32)
    sd = np.sqrt(np.float32(0.003) * np.maximum(img, 0) + np.float32(0.008**2))
    img += sd * rng.standard_normal(img.shape, dtype=np.float32)
    np.clip(img, 0.0, 1.0, out=img)
    return img


def _unit_chunk(task: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one chunk of units; its random stream depends on (seed, chunk) only."""
    rng = np.random.default_rng(np.random.SeedSequence(task["seed"], spawn_key=(1, task["chunk"])))
    S = task["size"]
    k = S / _BASE
    B = len(task["geno"])
    main, owner, nb = _draw_unit_cells(
        rng, task["geno"], task["line"], task["profiles"], task["lines"]
    )
    c0 = (S - 1) / 2
    cy = c0 + main["gt_cell_dy"] * k
    cx = c0 + main["gt_cell_dx"] * k
    ang = rng.uniform(0, 2 * np.pi, owner.size)
    dist = (main["gt_soma_size"][owner] + nb["gt_soma_size"]) * rng.uniform(1.15, 1.9, owner.size)
    ncy = cy[owner] + dist * k * np.sin(ang)
    ncx = cx[owner] + dist * k * np.cos(ang)
    cells = {key: np.concatenate([main[key], nb[key]]) for key in main}
    # neighbours carry no canvas-level extras of their own
    for key in ("gt_debris",):
        cells[key][B:] = 0
    extras = dict(
        crossing=main["gt_crossing_neurites"].astype(np.int64),
        defocus=main["gt_defocus"],
        dust=main["gt_dust"],
    )
    signal = _render(
        rng,
        cells,
        np.concatenate([cy, ncy]),
        np.concatenate([cx, ncx]),
        B,
        S,
        S,
        k,
        np.concatenate([np.arange(B), owner]),
        extras,
    )
    units = _acquire(
        rng,
        signal,
        task["gain"],
        task["bg"],
        task["vignette"],
        task["y"].astype(np.float64),
        task["x"].astype(np.float64),
        _TILES * S / 2,
        extras,
        k,
    )
    return units, _unit_truth(main, owner, nb)


def _draw_unit_cells(rng, geno, line, profiles, lines):
    """A chunk's first draws: its main cells, then their intruding neighbours.

    Shared by rendering (:func:`_unit_chunk`) and :func:`phantom_factors`, so both see the
    same cells from the same random stream. Returns ``main``, ``owner`` (the main cell of
    each neighbour) and ``nb``.
    """
    main = _draw_cells(rng, geno, line, profiles, lines)
    owner = np.repeat(np.arange(len(geno)), main["gt_neighbours"].astype(np.int64))
    nb = _draw_cells(rng, geno[owner], line[owner], profiles, lines)
    return main, owner, nb


def _unit_truth(main, owner, nb) -> dict[str, np.ndarray]:
    """The ground-truth columns of a chunk's units (factors + derived death columns)."""
    gts = {key: main[key] for key in (*FACTORS, "gt_dead", "gt_death_hazard")}
    gts["gt_neighbours_dead"] = np.bincount(
        owner, weights=nb["gt_dead"], minlength=len(main["gt_dead"])
    ).astype(np.int64)
    return gts


def _field_task(task: dict) -> tuple[np.ndarray, pd.DataFrame]:
    """Render one field with many cells of one line."""
    rng = np.random.default_rng(np.random.SeedSequence(task["seed"], spawn_key=(3, task["field"])))
    S = task["size"]
    n = task["n_cells"]
    geno = np.full(n, task["geno"])
    line = np.full(n, task["line"])
    cells = _draw_cells(rng, geno, line, task["profiles"], task["lines"])
    # random sequential placement with a minimum distance between somata
    cy, cx = np.zeros(n), np.zeros(n)
    for i in range(n):
        need = 1.15 * 2 * float(cells["gt_soma_size"][i])
        cand = rng.uniform(8, S - 8, (60, 2))
        d2 = (cand[:, None, 0] - cy[None, :i]) ** 2 + (cand[:, None, 1] - cx[None, :i]) ** 2
        ok = np.flatnonzero((d2 > need * need).all(axis=1))
        cy[i], cx[i] = cand[ok[0] if ok.size else -1]
    extras = dict(
        crossing=np.array([rng.poisson(0.15 * (S / _BASE) ** 2)]),
        defocus=np.array([0.0]),
        dust=np.array([rng.uniform(0.1, 0.3) if rng.random() < 0.2 else 0.0]),
    )
    signal = _render(rng, cells, cy, cx, 1, S, S, 1.0, np.zeros(n, np.int64), extras)
    img = _acquire(
        rng,
        signal,
        task["gain"][None],
        task["bg"][None],
        np.array([task["vignette"]]),
        np.array([(S - 1) / 2]),
        np.array([(S - 1) / 2]),
        S / 2,
        extras,
        1.0,
    )[0]
    skip = (*_CANVAS_FACTORS, "gt_cell_dy", "gt_cell_dx")
    keep = [key for key in (*FACTORS, *_DERIVED[:2]) if key not in skip]
    table = pd.DataFrame({"y": np.rint(cy).astype(int), "x": np.rint(cx).astype(int)})
    for key in keep:
        table[key] = cells[key]
    return img, table


# --------------------------------------------------------------------------- cell death


def _otsu(hist: np.ndarray) -> int:
    """Otsu threshold bin of a histogram (first bin of the upper class)."""
    hist = hist.astype(np.float64)
    nb = hist.size
    w0 = np.cumsum(hist)
    mu = np.cumsum(hist * np.arange(nb))
    total, mt = w0[-1], mu[-1]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - mu * total) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    return int(np.argmax(between[:-1])) + 1


def _quantile_bin(hist: np.ndarray, q: float) -> int:
    c = np.cumsum(hist)
    return int(np.searchsorted(c, q * c[-1]))


def _death_rate(units: np.ndarray, plate: np.ndarray, nbins: int = 1024) -> np.ndarray:
    """Fraction of nuclear pixels above an Otsu threshold of the dead channel, per unit.

    Nuclei are the pixels of the nuclear channel above its Otsu threshold; both
    thresholds are computed per plate from the plate's pooled histograms. The dead
    threshold is never below the living nuclei's level + 4 noise widths (median + 4 ×
    (84th percentile - median)), so that a plate without dead cells does not split noise.
    """
    n = len(units)
    step = 512

    def q(a):
        return np.minimum((a * nbins).astype(np.int32), nbins - 1)

    rate = np.zeros(n)
    t_nuc, t_dead = {}, {}
    for p in np.unique(plate):
        idx = np.flatnonzero(plate == p)
        h = np.zeros(nbins, np.int64)
        for s in range(0, idx.size, step):
            h += np.bincount(q(units[idx[s : s + step], 2]).ravel(), minlength=nbins)
        t_nuc[p] = _otsu(h)
        hd = np.zeros(nbins, np.int64)
        for s in range(0, idx.size, step):
            u = units[idx[s : s + step]]
            mask = q(u[:, 2]) >= t_nuc[p]
            hd += np.bincount(q(u[:, 3])[mask], minlength=nbins)
        if hd.sum() == 0:
            t_dead[p] = nbins
            continue
        med = _quantile_bin(hd, 0.5)
        floor = med + 4 * max(_quantile_bin(hd, 0.84) - med, 1)
        t_dead[p] = max(_otsu(hd), floor)
        for s in range(0, idx.size, step):
            sl = idx[s : s + step]
            u = units[sl]
            mask = q(u[:, 2]) >= t_nuc[p]
            pos = mask & (q(u[:, 3]) >= t_dead[p])
            area = mask.sum(axis=(1, 2))
            rate[sl] = np.where(area > 0, pos.sum(axis=(1, 2)) / np.maximum(area, 1), 0.0)
    return rate
