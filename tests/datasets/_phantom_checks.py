"""Image measurements shared by test_phantom.py; run as a script to check other seeds.

python tests/datasets/_phantom_checks.py 1 2 3   # reruns test_phantom.py per seed
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from scipy import ndimage


def mito_bright(units: np.ndarray) -> np.ndarray:
    """TMRM-like intensity of the mitochondria: 99th percentile of the unit's mito channel."""
    return np.percentile(units[:, 0].reshape(len(units), -1), 99, axis=1)


def _cell_centre(units: np.ndarray, obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    s = units.shape[-1]
    k = s / 128
    c0 = (s - 1) / 2
    return c0 + obs["gt_cell_dy"].to_numpy() * k, c0 + obs["gt_cell_dx"].to_numpy() * k


def puncta_near_cell(units: np.ndarray, obs: pd.DataFrame, radius: float = 30.0) -> np.ndarray:
    """Lysosomal puncta (local maxima of a difference of gaussians) near the unit's cell."""
    img = units[:, 1]
    dog = ndimage.gaussian_filter(img, (0, 0.7, 0.7)) - ndimage.gaussian_filter(img, (0, 3, 3))
    peak = (dog == ndimage.maximum_filter(dog, size=(1, 3, 3))) & (dog > 0.05)
    cy, cx = _cell_centre(units, obs)
    yy, xx = np.mgrid[: img.shape[1], : img.shape[2]]
    k = units.shape[-1] / 128
    near = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2 < (radius * k) ** 2
    return (peak & near).sum(axis=(1, 2))


def main_nucleus(units: np.ndarray, obs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Area and mean intensity of the segmented nucleus closest to the unit's cell centre."""
    from skimage.filters import threshold_otsu

    cy, cx = _cell_centre(units, obs)
    area = np.zeros(len(units))
    bright = np.zeros(len(units))
    for i, u in enumerate(units[:, 2]):
        mask = u > threshold_otsu(u)
        lab, _ = ndimage.label(mask)
        yy, xx = np.nonzero(mask)
        j = np.argmin((yy - cy[i]) ** 2 + (xx - cx[i]) ** 2)
        comp = lab == lab[yy[j], xx[j]]
        area[i] = comp.sum()
        bright[i] = u[comp].mean()
    return area, bright


def summary_features(units: np.ndarray) -> np.ndarray:
    """Mean, sd and 50/90/99th percentiles of each dye channel (the dead label excluded)."""
    feats = []
    for c in range(3):
        x = units[:, c].reshape(len(units), -1)
        feats += [x.mean(1), x.std(1), *np.percentile(x, [50, 90, 99], axis=1)]
    return np.stack(feats, 1)


def classifier_accuracy(units: np.ndarray, obs: pd.DataFrame) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    y = obs["genotype"].cat.codes.to_numpy()
    return float(cross_val_score(clf, summary_features(units), y, cv=cv).mean())


if __name__ == "__main__":  # pragma: no cover - a manual robustness check
    import os
    import subprocess
    from pathlib import Path

    test = Path(__file__).with_name("test_phantom.py")
    for seed in [int(a) for a in sys.argv[1:]] or [1, 2, 3, 4]:
        print(f"--- seed {seed}", flush=True)
        env = {**os.environ, "PHANTOM_TEST_SEED": str(seed)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", str(test)], env=env, check=True)
