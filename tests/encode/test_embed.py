"""Embedding: deterministic, batch-size independent; checkpoints; AnnData hand-off."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import sparsecell.encode as enc
from sparsecell import SparsecellError


def test_deterministic_and_batch_size_independent(blobs, trained):
    X, _ = blobs
    a = enc.embed(trained, X, batch_size=256, progress=False)
    b = enc.embed(trained, X, batch_size=256, progress=False)
    c = enc.embed(trained, X, batch_size=7, progress=False)
    assert a.shape == (300, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5, rtol=1e-5)
    # torch input and the module's forward agree with embed
    with torch.no_grad():
        f = trained(torch.from_numpy(X[:10])).numpy()
    np.testing.assert_allclose(a[:10], f, atol=1e-5, rtol=1e-5)
    assert np.abs(a).sum() > 0


def test_tokens_average_to_the_embedding(blobs, trained):
    X, _ = blobs
    t = enc.embed(trained, X[:20], tokens=True, progress=False)
    e = enc.embed(trained, X[:20], progress=False)
    assert t.shape == (20, 8 * 8, 16)  # 32 → stem /2 → 16 → stage 2 /2 → 8
    np.testing.assert_allclose(t.mean(axis=1), e, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip(tmp_path, blobs, trained):
    X, _ = blobs
    path = tmp_path / "enc"
    trained.save(str(path))
    assert sorted(p.name for p in path.iterdir()) == ["cfg.json", "model.safetensors"]
    cfg = json.loads((path / "cfg.json").read_text())
    assert cfg["schema_version"] == 1 and cfg["encoder"]["width"] == 8
    assert len(cfg["normalization"]["mean"]) == 2 and "manifest" in cfg
    assert cfg["manifest"]["versions"]["torch"] == torch.__version__
    m = enc.load(path)
    np.testing.assert_array_equal(
        enc.embed(m, X, progress=False), enc.embed(trained, X, progress=False)
    )
    assert m.metrics == trained.metrics
    assert m.classes == trained.classes and m.cfg == trained.cfg
    assert m.train_config == trained.train_config
    # saving again replaces the folder atomically (no temporary folders left behind)
    m.save(str(path))
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]


def test_load_errors(tmp_path, trained):
    with pytest.raises(SparsecellError, match="no encoder checkpoint"):
        enc.load(tmp_path / "missing")
    path = tmp_path / "enc"
    trained.save(str(path))
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SparsecellError, match="cannot load weights"):
        enc.load(path)


def test_embed_bad_input(blobs, trained):
    X, _ = blobs
    with pytest.raises(SparsecellError, match="units have 3 channels, the encoder expects 2"):
        enc.embed(trained, np.zeros((4, 3, 32, 32), np.float32), progress=False)
    bad = X[:10].copy()
    bad[4, 0, 0, 0] = np.inf
    with pytest.raises(SparsecellError, match="unit 4 contains NaN or inf"):
        enc.embed(trained, bad, progress=False)


def test_to_anndata_and_files(tmp_path, blobs, trained):
    ad = pytest.importorskip("anndata")
    X, y = blobs
    E = enc.embed(trained, X, progress=False)
    obs = pd.DataFrame({"genotype": y}, index=range(len(y)))
    a = enc.to_anndata(E, obs, model=trained)
    assert a.shape == (300, 0) and a.obsm["X_cnn"].shape == (300, 16)
    assert list(a.obs_names[:2]) == ["0", "1"]
    assert a.uns["X_cnn"]["params"]["embed_dim"] == 16
    b = enc.to_anndata(E, key="X_emb", x=True)
    assert b.shape == (300, 16) and list(b.obs_names[:2]) == ["u0", "u1"]
    np.testing.assert_array_equal(b.X, b.obsm["X_emb"])

    h5 = enc.write_embeddings(tmp_path / "emb.h5ad", E, obs, model=trained)
    r = ad.read_h5ad(h5)
    np.testing.assert_array_equal(r.obsm["X_cnn"], E)
    folder = enc.write_embeddings(tmp_path / "emb", E, obs, model=trained)
    np.testing.assert_array_equal(np.load(folder / "embeddings.npy"), E)
    assert len(pd.read_csv(folder / "obs.csv", index_col=0)) == 300
    assert json.loads((folder / "manifest.json").read_text())["n"] == 300
    with pytest.raises(SparsecellError, match="obs has 3 rows"):
        enc.to_anndata(E, obs.iloc[:3])
