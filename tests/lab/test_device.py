"""The lab metrics on a torch device (``device=``, ``sparsecell.lab._accel``).

Without a GPU the device code is run on ``torch.device("cpu")`` (``lab_device`` is
patched to return it), so every line that a GPU would run is checked here against the
numpy / numba CPU path. The CUDA-only tests at the end run when a GPU is visible.

Tolerances: the two paths compute the same float64 quantities with different summation
orders (blocked torch products vs numpy / scipy.sparse), so scores agree to a few units of
float64 rounding, 1e-12 relative; neighbour indices and ranks are exact and must be equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from knn_helpers import brute_knn, brute_ranks, geometries

import sparsecell as spc
from sparsecell._errors import SparsecellError
from sparsecell.lab import _accel, _knn, _ridge

CPU = torch.device("cpu")
HAS_CUDA = torch.cuda.is_available()
RTOL = 1e-12


@pytest.fixture
def torch_cpu(monkeypatch):
    """``device="torch-cpu"`` selects the device code on the CPU."""
    real = _accel.lab_device
    monkeypatch.setattr(_accel, "lab_device", lambda d: CPU if d == "torch-cpu" else real(d))
    return "torch-cpu"


def _data(sparse_b: bool) -> tuple[np.ndarray, np.ndarray | sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((300, 24))
    B = A @ rng.standard_normal((24, 18)) + 0.5 * rng.standard_normal((300, 18))
    if sparse_b:
        B = sp.csr_matrix(np.where(B > 0.6, B, 0.0))
    s = A[:, 0] + 0.2 * rng.standard_normal(300)
    return A, B, s


METRICS = {
    "semi_matching": lambda A, B, s, d: spc.lab.semi_matching(A, B, device=d).score,
    "soft_matching": lambda A, B, s, d: spc.lab.soft_matching(A, B, device=d).score,
    "ridge_loo": lambda A, B, s, d: spc.lab.ridge(A, B, inner_cv="loo", device=d).score,
    "ridge_gcv": lambda A, B, s, d: spc.lab.ridge(A, B, inner_cv="gcv", device=d).score,
    "cka": lambda A, B, s, d: spc.lab.cka(A, B, device=d),
    "cka_debiased": lambda A, B, s, d: spc.lab.cka(A, B, debiased=True, device=d),
    "rsa": lambda A, B, s, d: spc.lab.rsa(A, B, device=d),
    "procrustes": lambda A, B, s, d: spc.lab.procrustes(A, B, device=d),
    "procrustes_distance": lambda A, B, s, d: spc.lab.procrustes_distance(A, B, device=d),
    "mutual_knn": lambda A, B, s, d: spc.lab.mutual_knn(A, B, device=d),
    "knn_ratio": lambda A, B, s, d: spc.lab.knn_ratio(B, s, device=d),
    "morans_i": lambda A, B, s, d: spc.lab.morans_i(B, s, device=d),
    "knn_overlap": lambda A, B, s, d: spc.lab.knn_overlap(B, A, device=d),
    "trustworthiness": lambda A, B, s, d: spc.lab.trustworthiness(B, A, device=d),
    "effective_rank": lambda A, B, s, d: spc.lab.effective_rank(B, device=d),
}


# --------------------------------------------------------------------------- device choice


def test_cpu_names_select_the_cpu_path():
    assert _accel.lab_device(None) is None
    assert _accel.lab_device("cpu") is None
    assert _accel.lab_device(torch.device("cpu")) is None


@pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour without a GPU")
def test_auto_without_a_gpu_is_the_cpu_and_cuda_is_a_clear_error():
    assert _accel.lab_device("auto") is None
    with pytest.raises(SparsecellError, match="no GPU is visible"):
        _accel.lab_device("cuda")
    A, B, _ = _data(False)
    with pytest.raises(SparsecellError, match="no GPU is visible"):
        spc.lab.alignment(A, B, metric="cka", device="cuda")
    with pytest.raises(SparsecellError, match="no GPU is visible"):
        spc.lab.fidelity(A, B[:, 0], metric="knn_ratio", device="cuda")


def test_unknown_device_name_is_a_clear_error():
    with pytest.raises(SparsecellError, match="unknown device 'tpu'"):
        _accel.lab_device("tpu")


def test_too_little_gpu_memory_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (2**30, 80 * 2**30))
    with pytest.raises(SparsecellError, match=r"needs 8\.0 GiB on cuda, 1\.0 GiB is free"):
        _accel.check_fits(8 * 2**30, torch.device("cuda"), "the kNN search")


def test_bfloat16_screening_is_refused_on_cuda():
    X = np.random.default_rng(0).standard_normal((50, 40))
    with pytest.raises(SparsecellError, match="bfloat16 kNN screening is CPU-only"):
        _knn.knn_indices(X, 3, precision="bfloat16", dev=torch.device("cuda"))


@pytest.mark.parametrize("user", ["default", "legacy_flag", "new_api", "medium"])
def test_exact_matmul_forbids_tf32_and_restores_the_users_setting(user):
    # torch ≥ 2.9 raises on reading the legacy allow_tf32 flag once the new fp32_precision
    # API was used; the switch must work (and restore) whichever way the user set TF32.
    from sparsecell._device import cuda_tf32, exact_matmul

    m = torch.backends.cuda.matmul
    conv = torch.backends.cudnn.conv
    saved = (m.fp32_precision, conv.fp32_precision)
    try:
        if user == "legacy_flag":
            m.allow_tf32 = True
        elif user == "new_api":
            m.fp32_precision = "tf32"
        elif user == "medium":
            torch.set_float32_matmul_precision("medium")
        before = (m.fp32_precision, conv.fp32_precision, torch.get_float32_matmul_precision())
        with exact_matmul():
            assert m.fp32_precision == "ieee"
        with cuda_tf32(False):
            assert (m.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
        with cuda_tf32(True):
            assert (m.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
        after = (m.fp32_precision, conv.fp32_precision, torch.get_float32_matmul_precision())
        assert after == before
    finally:
        m.fp32_precision, conv.fp32_precision = saved


def _fold_sum(values: list[float]) -> float:
    """The fold order of ``_knn._sum_last`` in plain Python floats (one rounding per add)."""
    v, p = list(values), len(values)
    while p > 1:
        h = 1 << ((p - 1).bit_length() - 1)
        for i in range(p - h):
            v[i] = v[i] + v[h + i]
        p = h
    return v[0]


def test_fixed_order_sum_follows_its_fold_order_in_every_batch_shape():
    # the exact-tie tests rely on equal pairs giving bit-identical distances in any call;
    # a library reduction (any other order) differs from the fold in the last bits here
    rng = np.random.default_rng(11)
    for p in (1, 2, 7, 64, 100, 513):
        row = rng.standard_normal(p) * 10 ** rng.uniform(-3, 3, p)
        want = _fold_sum(row.tolist())
        t = torch.from_numpy(row)
        batches = (
            t[None].clone(),
            torch.cat([t[None]] * 37 + [2 * t[None]], dim=0),
            torch.cat([3 * t[None], t[None]], dim=0)[1:].clone(),
            t.expand(4, 5, p).clone(),
        )
        for G in batches:
            got = _knn._sum_last(G).reshape(-1)
            assert float(got[0]) == want
    # rounding differs between orders: the fold is not the plain sum on this data
    rows = rng.standard_normal((200, 513)) * 10 ** rng.uniform(-3, 3, (200, 513))
    folded = _knn._sum_last(torch.from_numpy(rows.copy())).numpy()
    assert np.any(folded != rows.sum(axis=1))


def test_a_gpu_ordinal_or_kind_that_is_not_there_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SparsecellError, match="only 1 GPU"):
        _accel.lab_device("cuda:3")
    with pytest.raises(SparsecellError, match="CPU or a CUDA GPU, not 'meta'"):
        _accel.lab_device("meta")


def test_running_out_of_gpu_memory_is_a_one_line_error(monkeypatch):
    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\n...")

    monkeypatch.setattr(_knn, "knn_indices", boom)
    A, B, s = _data(False)
    with pytest.raises(SparsecellError, match="knn_ratio ran out of GPU memory") as e:
        spc.lab.knn_ratio(B, s)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- moving data


def test_rows_of_a_csr_matrix_equal_its_dense_rows_duplicates_included():
    X = sp.random(60, 30, density=0.2, format="csr", random_state=0)
    np.testing.assert_array_equal(_accel.rows(X, 5, 40, CPU).numpy(), X[5:40].toarray())
    # a non-canonical CSR: duplicate entries add up, as scipy's toarray does
    dup = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([1, 1, 0]), np.array([0, 2, 3])))
    np.testing.assert_array_equal(_accel.rows(dup, 0, 2, CPU).numpy(), dup.toarray())
    np.testing.assert_array_equal(_accel.whole(X, CPU, "X", block_elems=100).numpy(), X.toarray())


@pytest.mark.parametrize("sparse", [False, True])
def test_cross_and_gram_equal_numpy(sparse):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((120, 9)) + 3.0
    B = rng.standard_normal((120, 5))
    if sparse:
        A = sp.csr_matrix(np.where(A > 3.5, A, 0.0))
    Ad = A.toarray() if sparse else A
    ma, mb = Ad.mean(0), B.mean(0)
    want = (Ad - ma).T @ (B - mb)
    got = _accel.cross(A, B, ma, mb, CPU, block_elems=50).numpy()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max())
    wide = sp.csr_matrix(rng.standard_normal((10, 40))) if sparse else rng.standard_normal((10, 40))
    Wd = wide.toarray() if sparse else wide
    for X, Xd in ((A, Ad), (wide, Wd)):  # p ≤ n: p × p; p > n: n × n
        Xc = Xd - Xd.mean(0)
        want = Xc.T @ Xc if Xd.shape[1] <= Xd.shape[0] else Xc @ Xc.T
        got = _accel.gram(X, Xd.mean(0), CPU).numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.abs(want).max())


# --------------------------------------------------------------------------- kNN and ranks


@pytest.mark.parametrize("name", list(geometries()))
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_device_knn_equals_brute_force(name, precision):
    X = geometries()[name]
    got = _knn.knn_indices(X, 7, precision=precision, block_elems=40_000, dev=CPU)
    np.testing.assert_array_equal(got, brute_knn(X, 7))


def test_device_knn_of_sparse_input_equals_brute_force():
    rng = np.random.default_rng(5)
    X = np.where(rng.random((300, 200)) < 0.05, rng.integers(1, 4, (300, 200)), 0).astype(float)
    got = _knn.knn_indices(sp.csr_matrix(X), 6, dev=CPU)
    np.testing.assert_array_equal(got, brute_knn(X, 6))


@pytest.mark.parametrize("name", ["gaussian", "duplicates", "integer_grid", "identical"])
def test_device_ranks_equal_brute_force(name):
    X = geometries()[name]
    nbr = brute_knn(X[:, : X.shape[1] // 2], 5)  # neighbours from another space
    want = brute_ranks(X, nbr)
    np.testing.assert_array_equal(_knn.neighbour_ranks(X, nbr, block_elems=30_000, dev=CPU), want)
    got_sparse = _knn.neighbour_ranks(sp.csr_matrix(X), nbr, dev=CPU)
    np.testing.assert_array_equal(got_sparse, want)


# --------------------------------------------------------------------------- ridge


@pytest.mark.parametrize("shape", [(300, 20), (60, 150)])  # covariance and Gram basis
@pytest.mark.parametrize("inner", ["loo", "gcv"])
@pytest.mark.parametrize("sparse", [False, True])
def test_device_ridge_cv_equals_cpu(shape, inner, sparse):
    rng = np.random.default_rng(7)
    n, p = shape
    X = rng.standard_normal((n, p))
    Y = X[:, :5] @ rng.standard_normal((5, 6)) + rng.standard_normal((n, 6))
    if sparse:
        X = sp.csr_matrix(np.where(np.abs(X) > 1.0, X, 0.0))
        Y = sp.csr_matrix(np.where(np.abs(Y) > 1.0, Y, 0.0))
    alphas = np.logspace(-8, 8, 17)
    want = _ridge.ridge_cv(X, Y, alphas, inner=inner, alpha_per_target=True)
    got = _ridge.ridge_cv(X, Y, alphas, inner=inner, alpha_per_target=True, dev=CPU)
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-10 * np.abs(want[0]).max())
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-10 * np.abs(want[1]).max())
    # every score is a sum of small non-negative terms (accurate near interpolation too)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-10)


# --------------------------------------------------------------------------- every metric


@pytest.mark.parametrize("sparse_b", [False, True])
@pytest.mark.parametrize("metric", list(METRICS))
def test_every_metric_on_the_device_path_equals_the_cpu_path(torch_cpu, metric, sparse_b):
    A, B, s = _data(sparse_b)
    fn = METRICS[metric]
    want = fn(A, B, s, None)
    got = fn(A, B, s, torch_cpu)
    assert got == pytest.approx(want, rel=RTOL, abs=RTOL)


def test_dispatchers_pass_the_device_on(torch_cpu, monkeypatch):
    seen = []
    real = _knn.knn_indices
    monkeypatch.setattr(
        _knn, "knn_indices", lambda *a, **kw: seen.append(kw.get("dev")) or real(*a, **kw)
    )
    A, B, s = _data(False)
    spc.lab.alignment(A, B, metric="mutual_knn", device=torch_cpu)
    spc.lab.fidelity(B, s, metric="knn_ratio", device=torch_cpu)
    assert seen == [CPU, CPU, CPU]


# --------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("sparse_b", [False, True])
@pytest.mark.parametrize("metric", list(METRICS))
def test_every_metric_on_cuda_equals_the_cpu(metric, sparse_b):
    A, B, s = _data(sparse_b)
    fn = METRICS[metric]
    assert fn(A, B, s, "cuda") == pytest.approx(fn(A, B, s, None), rel=RTOL, abs=RTOL)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(geometries()))
def test_cuda_knn_equals_brute_force(name):
    X = geometries()[name]
    got = _knn.knn_indices(X, 7, block_elems=40_000, dev=torch.device("cuda"))
    np.testing.assert_array_equal(got, brute_knn(X, 7))
