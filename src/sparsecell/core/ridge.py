"""Ridge regression with leave-one-out / GCV penalty choice (implementation moving here)."""

from __future__ import annotations

from ..lab._ridge import ridge_cv

__all__ = ["ridge_cv"]
