"""Images → units: read fields (TIFF / OME-TIFF, z-stacks), QC, patches or cell crops,
cell-death labels, and shards on disk.

>>> import sparsecell as spc
>>> shards = spc.images.process("metadata.csv", "images/", "runs/units",
...                             mode="patch", size=128, dead_channel="dead")  # doctest: +SKIP
>>> shards.obs.head(); shards[0:8].shape                                     # doctest: +SKIP
"""

from .io import (
    FieldInfo,
    FieldSet,
    UnlistedFileWarning,
    read_field,
    read_field_info,
    read_metadata,
    validate,
)
from .process import ProcessSummary, process, qc_fields
from .qc import FieldQC, QCConfig, field_qc, focus_score, foreground_threshold
from .sample import sample_neuron_path
from .segment import NucleiConfig, nuclei_table, segment_nuclei
from .shards import UnitShards, open_shards, write_shards
from .units import crop_units, extract_patches, patch_positions, window_fraction
from .viability import cell_death_rate, dead_threshold, death_rate_cells, death_rate_windows

__all__ = [
    "FieldInfo",
    "FieldQC",
    "FieldSet",
    "NucleiConfig",
    "ProcessSummary",
    "QCConfig",
    "UnitShards",
    "UnlistedFileWarning",
    "cell_death_rate",
    "crop_units",
    "dead_threshold",
    "death_rate_cells",
    "death_rate_windows",
    "extract_patches",
    "field_qc",
    "focus_score",
    "foreground_threshold",
    "nuclei_table",
    "open_shards",
    "patch_positions",
    "process",
    "qc_fields",
    "read_field",
    "read_field_info",
    "read_metadata",
    "sample_neuron_path",
    "segment_nuclei",
    "validate",
    "window_fraction",
    "write_shards",
]
