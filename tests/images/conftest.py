"""Fixtures of the image tests (helpers live in images_helpers.py)."""

from __future__ import annotations

import pytest
from images_helpers import disk_field, grid_centres, write_set


@pytest.fixture
def field_set(tmp_path):
    """Five good fields in tmp_path/img plus their metadata table."""
    fields = {
        f"f{i}.tif": disk_field(grid_centres(seed=i), dead={0, 5, 10, 15}, seed=i) for i in range(5)
    }
    meta = write_set(tmp_path / "img", fields)
    return tmp_path / "img", meta, fields
