"""Toy models of superposition (Elhage et al. 2022), and SAEs trained on their hidden layer.

A toy model compresses ``n_features`` sparse features into ``n_hidden`` neurons and
reconstructs them::

    h = act(W x)            W: n_hidden × n_features, act = ReLU ("relu") or identity
    x̂ = ReLU(Wᵀ h + b)

trained on the importance-weighted squared error ``Σ_i I_i (x_i − x̂_i)²`` with Adam. A
feature is *active* with probability ``p`` and then takes a value drawn from ``U(0, 1)``;
otherwise it is 0. With dense features a model keeps about ``n_hidden`` features, one per
dimension; with sparse features it packs more features than dimensions (superposition).

``hidden_activation="linear"`` is Elhage's original model; ``"relu"`` gives the neurons a
privileged basis (their section "Superposition in a privileged basis"), which is what
neuron-level alignment metrics (semi-matching, soft-matching) need to be meaningful.

>>> import sparsecell as spc
>>> model = spc.lab.train_toy(spc.lab.ToyConfig(n_features=20, n_hidden=5, p=0.05, steps=300))
>>> model.W.shape
(5, 20)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._errors import SparsecellError
from .dictionary import (
    feature_dimensionality as _feature_dimensionality,
)
from .dictionary import (
    features_per_dimension as _features_per_dimension,
)
from .dictionary import (
    interference as _interference,
)

ACTIVATIONS = ("relu", "linear")


@dataclass
class ToyConfig:
    """A toy model of superposition and how to train it."""

    n_features: int = 64
    """Number of input features ``n``."""
    n_hidden: int = 16
    """Number of hidden neurons ``m``."""
    p: float = 0.1
    """Probability that a feature is active (``1 − S`` in Elhage's notation, ``S`` the
    sparsity); an active feature takes a value from ``U(0, 1)``."""
    importance: float = 1.0
    """Importance decay ``r``: feature ``i`` has importance ``r**i`` (1.0: uniform)."""
    hidden_activation: str = "relu"
    """``relu`` (privileged neuron basis) or ``linear`` (Elhage's ``h = W x``)."""
    steps: int = 4000
    """Adam steps."""
    batch_size: int = 1024
    """Fresh feature vectors per step."""
    lr: float = 3e-3
    """Adam learning rate (constant)."""
    seed: int = 0
    """Seeds the initialisation and the training samples."""
    device: str = "cpu"
    """Torch device (``cpu``, ``cuda``, ``cuda:N``)."""

    def validate(self) -> ToyConfig:
        """Raise :class:`SparsecellError` for settings that cannot train; return self."""
        if int(self.n_features) < 2:
            raise SparsecellError(
                f"n_features must be at least 2, got {self.n_features}", "e.g. n_features=64"
            )
        if int(self.n_hidden) < 1:
            raise SparsecellError(
                f"n_hidden must be at least 1, got {self.n_hidden}", "e.g. n_hidden=16"
            )
        if not (0.0 < float(self.p) <= 1.0):
            raise SparsecellError(
                f"p (probability a feature is active) must be in (0, 1], got {self.p}",
                "e.g. p=0.1",
            )
        if not (0.0 < float(self.importance) <= 1.0):
            raise SparsecellError(
                f"importance decay must be in (0, 1], got {self.importance}",
                "1.0 for uniform importance, e.g. 0.9 for a decay",
            )
        if self.hidden_activation not in ACTIVATIONS:
            raise SparsecellError(
                f"unknown hidden activation '{self.hidden_activation}'",
                f"choose one of {', '.join(ACTIVATIONS)}",
            )
        if int(self.steps) < 1 or int(self.batch_size) < 1:
            raise SparsecellError(
                f"steps and batch_size must be positive, got {self.steps}, {self.batch_size}",
                "e.g. steps=4000, batch_size=1024",
            )
        if not (float(self.lr) > 0.0 and math.isfinite(float(self.lr))):
            raise SparsecellError(f"lr must be a positive number, got {self.lr}", "e.g. 3e-3")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def importances(self) -> np.ndarray:
        """``I_i = importance**i`` (float64, length ``n_features``)."""
        return float(self.importance) ** np.arange(int(self.n_features), dtype=np.float64)


def _params(cfg_or_params: ToyConfig | dict[str, Any]) -> tuple[int, float]:
    if isinstance(cfg_or_params, ToyConfig):
        return int(cfg_or_params.n_features), float(cfg_or_params.p)
    try:
        n_features, p = int(cfg_or_params["n_features"]), float(cfg_or_params["p"])
    except (KeyError, TypeError) as e:
        raise SparsecellError(
            "sample_features needs a ToyConfig or a dict with n_features and p",
            "e.g. {'n_features': 64, 'p': 0.1}",
        ) from e
    ToyConfig(n_features=n_features, p=p).validate()
    return n_features, p


def _sample(n: int, n_features: int, p: float, gen: torch.Generator) -> torch.Tensor:
    active = torch.rand(n, n_features, generator=gen) < p
    return torch.rand(n, n_features, generator=gen) * active


def sample_features(n: int, cfg_or_params: ToyConfig | dict[str, Any], seed: int = 0) -> np.ndarray:
    """Draw sparse feature vectors: each feature active with probability ``p``, value
    ``U(0, 1)`` when active, else 0.

    Parameters
    ----------
    n
        Number of samples.
    cfg_or_params
        A :class:`ToyConfig` or a dict with ``n_features`` and ``p``.
    seed
        Random seed.

    Returns
    -------
    numpy.ndarray
        ``n × n_features`` float32.
    """
    if int(n) < 1:
        raise SparsecellError(f"n must be positive, got {n}", "ask for at least one sample")
    n_features, p = _params(cfg_or_params)
    gen = torch.Generator().manual_seed(int(seed))
    return _sample(int(n), n_features, p, gen).numpy()


@dataclass
class ToyModel:
    """A trained toy model: ``h = act(W x)``, ``x̂ = ReLU(Wᵀ h + b)``.

    Attributes
    ----------
    W
        ``n_hidden × n_features`` weights (column ``i`` is feature ``i``'s direction).
    b
        ``n_features`` output bias.
    cfg
        The configuration it was trained with.
    loss
        Importance-weighted loss ``E Σ_i I_i (x_i − x̂_i)²`` on 20,000 fresh samples.
    baseline_loss
        The same loss of the best constant prediction ``x̂_i = E[x_i] = p/2`` (exact:
        ``Σ_i I_i (p/3 − p²/4)``), i.e. of a model that represents nothing.
    """

    W: np.ndarray
    b: np.ndarray
    cfg: ToyConfig
    loss: float = float("nan")
    baseline_loss: float = float("nan")

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"ToyModel({c.n_features} → {c.n_hidden}, p={c.p}, {c.hidden_activation}, "
            f"seed={c.seed}, loss={self.loss:.4g})"
        )

    @property
    def features(self) -> np.ndarray:
        """``n_features × n_hidden``: one feature direction per row (``Wᵀ``), the layout of
        the :mod:`sparsecell.lab.dictionary` functions."""
        return self.W.T

    def _check(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.W.shape[1]:
            raise SparsecellError(
                f"expected n × {self.W.shape[1]} feature vectors, got shape {X.shape}",
                "draw them with spc.lab.sample_features(n, model.cfg)",
            )
        return X

    def hidden(self, X: Any) -> np.ndarray:
        """Hidden activations ``act(W x)`` of feature vectors ``X`` (``n × n_features``)."""
        H = self._check(X) @ self.W.T
        if self.cfg.hidden_activation == "relu":
            H = np.maximum(H, 0.0)
        return H.astype(np.float32)

    def reconstruct(self, X: Any) -> np.ndarray:
        """Reconstructions ``x̂ = ReLU(Wᵀ h + b)``."""
        H = self.hidden(X).astype(np.float64)
        return np.maximum(H @ self.W + self.b, 0.0).astype(np.float32)

    def feature_norms(self) -> np.ndarray:
        """``‖W_i‖`` per feature (about 1 when represented, about 0 when ignored)."""
        return np.linalg.norm(self.W, axis=0)

    def superposition(self) -> np.ndarray:
        """Per feature ``Σ_{j≠i} (Ŵ_i · W_j)²``: how much other features project on it
        (Elhage's colour scale; 0 for a feature with a dimension of its own)."""
        F = self.features
        norms = np.linalg.norm(F, axis=1)
        Fn = F / np.maximum(norms, 1e-12)[:, None]
        G = (Fn @ F.T) ** 2
        np.fill_diagonal(G, 0.0)
        return np.where(norms > 0, G.sum(axis=1), 0.0)

    def features_per_dimension(self) -> float:
        """``‖W‖_F² / n_hidden`` (Elhage et al. 2022): represented features per neuron."""
        return _features_per_dimension(self.features)

    def feature_dimensionality(self) -> np.ndarray:
        """Per feature ``D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²`` (Elhage et al. 2022)."""
        return _feature_dimensionality(self.features)

    def represented(self, threshold: float = 0.5) -> np.ndarray:
        """Boolean mask of features with ``‖W_i‖ > threshold``."""
        return self.feature_norms() > float(threshold)

    def n_represented(self, threshold: float = 0.5) -> int:
        """Number of features with ``‖W_i‖ > threshold``."""
        return int(self.represented(threshold).sum())

    def interference(self, threshold: float = 0.5):
        """:func:`sparsecell.lab.interference` of the represented features' directions
        (features with ``‖W_i‖ ≤ threshold`` would add noise directions of no consequence)."""
        mask = self.represented(threshold)
        if mask.sum() < 2:
            raise SparsecellError(
                f"only {int(mask.sum())} feature(s) have norm > {threshold}",
                "train longer or lower the threshold",
            )
        return _interference(self.features[mask])

    def true_directions(self) -> np.ndarray:
        """``n_features × n_hidden``: the hidden-space image of each one-hot feature
        (``act(W e_i)``: ``W_i`` for the linear model, ``ReLU(W_i)`` for the relu model)."""
        F = self.features
        return np.maximum(F, 0.0) if self.cfg.hidden_activation == "relu" else F.copy()


@contextlib.contextmanager
def _one_thread(device: str = "cpu") -> Iterator[None]:
    """Run tiny CPU models on one intra-op thread, then restore the caller's setting.

    Toy models are far too small for intra-op parallelism: with two threads on a busy
    2-core machine a training step was measured 10-20× slower than with one.
    """
    if not str(device).startswith("cpu"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init(cfg: ToyConfig, gen: torch.Generator) -> torch.Tensor:
    # Xavier-normal initialisation (as in Elhage et al.'s notebook)
    std = math.sqrt(2.0 / (cfg.n_features + cfg.n_hidden))
    return torch.randn(cfg.n_hidden, cfg.n_features, generator=gen) * std


def train_toys(cfg: ToyConfig, seeds: list[int] | tuple[int, ...]) -> list[ToyModel]:
    """Train one toy model per seed, all at once (vectorised over models).

    Models share every setting but the seed; each one's initialisation and training
    samples come from its own generator, and Adam acts element-wise, so model ``s`` is
    trained as if alone (up to floating-point summation order).

    Parameters
    ----------
    cfg
        The configuration (its ``seed`` is ignored in favour of ``seeds``).
    seeds
        One seed per model.

    Returns
    -------
    list of ToyModel
        In the order of ``seeds``.
    """
    cfg.validate()
    with _one_thread(cfg.device):
        return _train_toys(cfg, seeds)


def _train_toys(cfg: ToyConfig, seeds: list[int] | tuple[int, ...]) -> list[ToyModel]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise SparsecellError("no seeds given", "pass at least one seed")
    try:
        dev = torch.device(cfg.device)
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise SparsecellError(f"device '{cfg.device}' is not available", "use cpu") from e
    n = int(cfg.n_features)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    W = torch.stack([_init(cfg, g) for g in gens]).to(dev).requires_grad_(True)
    b = torch.zeros(len(seeds), n, device=dev, requires_grad=True)
    imp = torch.as_tensor(cfg.importances(), dtype=torch.float32, device=dev)
    relu = cfg.hidden_activation == "relu"
    opt = torch.optim.Adam([W, b], lr=float(cfg.lr))

    def forward(x: torch.Tensor) -> torch.Tensor:  # x: M × B × n
        h = torch.bmm(x, W.transpose(1, 2))
        if relu:
            h = torch.relu(h)
        return torch.relu(torch.bmm(h, W) + b[:, None, :])

    for _ in range(int(cfg.steps)):
        x = torch.stack([_sample(int(cfg.batch_size), n, float(cfg.p), g) for g in gens]).to(dev)
        loss = (((x - forward(x)) ** 2) * imp).sum(-1).mean(-1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad():
        evals = []
        for s in seeds:
            g = torch.Generator().manual_seed(s + 7919)  # fresh samples, not the training ones
            evals.append(_sample(20_000, n, float(cfg.p), g))
        x = torch.stack(evals).to(dev)
        losses = (((x - forward(x)) ** 2) * imp).sum(-1).mean(-1).cpu().numpy()
    pp = float(cfg.p)
    baseline = float(np.sum(cfg.importances()) * (pp / 3.0 - pp**2 / 4.0))
    Wn = W.detach().cpu().double().numpy()
    bn = b.detach().cpu().double().numpy()
    return [
        ToyModel(
            W=Wn[i],
            b=bn[i],
            cfg=dataclasses.replace(cfg, seed=s),
            loss=float(losses[i]),
            baseline_loss=baseline,
        )
        for i, s in enumerate(seeds)
    ]


def train_toy(cfg: ToyConfig | None = None, **overrides: Any) -> ToyModel:
    """Train one toy model of superposition.

    Parameters
    ----------
    cfg
        The configuration (default :class:`ToyConfig()`).
    **overrides
        Fields of :class:`ToyConfig` to replace (``n_hidden=8``, ``p=0.05``, …).

    Returns
    -------
    ToyModel
        The trained model with its held-out loss and the trivial baseline loss.
    """
    cfg = cfg if cfg is not None else ToyConfig()
    if overrides:
        names = {f.name for f in dataclasses.fields(ToyConfig)}
        bad = sorted(set(overrides) - names)
        if bad:
            raise SparsecellError(
                f"unknown toy-model setting(s): {', '.join(bad)}",
                f"choose from {', '.join(sorted(names))}",
            )
        cfg = dataclasses.replace(cfg, **overrides)
    return train_toys(cfg, [cfg.seed])[0]


def toy_sae(
    model: ToyModel,
    n_samples: int = 50_000,
    *,
    arch: str = "topk",
    k: int | None = None,
    expansion: int | None = None,
    d_sae: int | None = None,
    seed: int = 0,
    epochs: float = 20.0,
    batch_size: int = 1024,
    progress: bool = False,
    **train_kwargs: Any,
):
    """Train an SAE on a toy model's hidden layer.

    The SAE sees ``model.hidden(X)`` for ``n_samples`` fresh feature vectors ``X`` (drawn
    with ``seed``). Compare its decoder with :meth:`ToyModel.true_directions` (the hidden
    image ``act(W e_i)`` of each one-hot feature: ``ReLU(W_i)`` for the relu model,
    ``W_i`` for the linear one) through :func:`sae_recovery`.

    Parameters
    ----------
    model
        A trained toy model.
    n_samples
        Training samples for the SAE.
    arch
        SAE architecture (see :func:`sparsecell.sae.train`).
    k
        Active latents per sample; ``None`` gives ``max(1, round(p · n_features))``, the
        expected number of active features.
    expansion
        Latents per hidden neuron; ``None`` (and no ``d_sae``) gives ``d_sae =
        2 · n_features`` latents.
    d_sae
        Number of latents (overrides ``expansion``).
    seed
        Seeds the samples and the SAE.
    epochs, batch_size, progress, **train_kwargs
        Passed to :func:`sparsecell.sae.train`.

    Returns
    -------
    sparsecell.sae.SparseAutoencoder
        The trained SAE (input: hidden activations).
    """
    from .. import sae as sae_mod

    c = model.cfg
    if int(n_samples) < 2:
        raise SparsecellError(f"n_samples must be at least 2, got {n_samples}", "e.g. 50000")
    if k is None:
        k = max(1, round(float(c.p) * int(c.n_features)))
    if d_sae is None:
        d_sae = 0 if expansion is not None else 2 * int(c.n_features)
    if expansion is None:
        expansion = 1
    if int(k) < 1 or int(expansion) < 1 or int(d_sae) < 0:
        raise SparsecellError(
            f"SAE k, expansion and d_sae must be positive, got k={k}, expansion={expansion}",
            "e.g. k=4, expansion=8",
        )
    H = model.hidden(sample_features(int(n_samples), c, seed=int(seed) + 104729))
    device = str(train_kwargs.get("device", "cpu" if not torch.cuda.is_available() else "cuda"))
    with _one_thread(device):
        return sae_mod.train(
            H,
            arch=arch,
            k=int(k),
            expansion=int(expansion),
            seed=int(seed),
            d_sae=int(d_sae),
            epochs=float(epochs),
            batch_size=int(batch_size),
            progress=progress,
            **train_kwargs,
        )


def sae_recovery(model: ToyModel, sae: Any, threshold: float = 0.5) -> dict[str, float]:
    """How well an SAE's decoder recovers a toy model's represented features.

    Parameters
    ----------
    model
        The toy model whose hidden layer the SAE was trained on.
    sae
        The SAE (from :func:`toy_sae`).
    threshold
        Features with ``‖W_i‖ ≤ threshold`` are not represented and are left out.

    Returns
    -------
    dict
        ``mean_max_cos`` and ``frac_recovered`` (best cosine > 0.9) of
        :func:`sparsecell.sae.feature_recovery` on the represented features' hidden-space
        directions (:meth:`ToyModel.true_directions`), and ``random_mean_max_cos``: the
        same for a random Gaussian decoder of the same shape (seed 0), the chance level.
    """
    from ..sae import feature_recovery

    F = model.true_directions()[model.represented(threshold)]
    F = F[np.linalg.norm(F, axis=1) > 0]
    if len(F) == 0:
        raise SparsecellError("the toy model represents no feature", "train it longer")
    rec = feature_recovery(sae, F, threshold=0.9)
    D = np.random.default_rng(0).standard_normal((sae.d_sae, F.shape[1]))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Fn = F / np.linalg.norm(F, axis=1, keepdims=True)
    return {
        "mean_max_cos": float(rec["mean_max_cos"]),
        "frac_recovered": float(rec["frac_recovered"]),
        "random_mean_max_cos": float((Fn @ D.T).max(axis=1).mean()),
    }


def summary(
    model: ToyModel, sae: Any = None, *, threshold: float = 0.5, n_eval: int = 20_000
) -> dict[str, Any]:
    """The numbers a user wants about a toy model (and an SAE on its hidden layer).

    Parameters
    ----------
    model
        A trained toy model.
    sae
        Optional SAE trained on ``model``'s hidden layer (:func:`toy_sae`).
    threshold
        Norm above which a feature counts as represented.
    n_eval
        Fresh samples for the SAE's reconstruction figures.

    Returns
    -------
    dict
        ``n_features``, ``n_hidden``, ``p``, ``loss``, ``baseline_loss``,
        ``loss_ratio`` (loss / baseline), ``features_per_dimension``, ``n_represented``,
        ``frac_represented``, ``mean_dimensionality`` (mean ``D_i`` over represented
        features), ``mean_abs_cos``, ``rms_cos``, ``max_abs_cos``, ``welch_bound`` (for the
        represented features in ``n_hidden`` dimensions), ``welch_ratio``; with an SAE also
        ``sae_fvu``, ``sae_l0``, ``sae_dead_frac``, ``sae_mean_max_cos``,
        ``sae_frac_recovered``, ``sae_random_mean_max_cos``.
    """
    c = model.cfg
    mask = model.represented(threshold)
    out: dict[str, Any] = {
        "n_features": int(c.n_features),
        "n_hidden": int(c.n_hidden),
        "p": float(c.p),
        "loss": float(model.loss),
        "baseline_loss": float(model.baseline_loss),
        "loss_ratio": float(model.loss / model.baseline_loss),
        "features_per_dimension": model.features_per_dimension(),
        "n_represented": int(mask.sum()),
        "frac_represented": float(mask.mean()),
        "mean_dimensionality": float(model.feature_dimensionality()[mask].mean())
        if mask.any()
        else 0.0,
    }
    if mask.sum() >= 2:
        inter = model.interference(threshold)
        out.update(
            mean_abs_cos=inter.mean_abs_cos,
            rms_cos=inter.rms_cos,
            max_abs_cos=inter.max_abs_cos,
            welch_bound=inter.welch_bound,
            welch_ratio=inter.ratio if inter.welch_bound > 0 else float("nan"),
        )
    if sae is not None:
        from ..sae import evaluate

        H = model.hidden(sample_features(int(n_eval), c, seed=int(c.seed) + 15485863))
        ev = evaluate(sae, H)
        rec = sae_recovery(model, sae, threshold)
        out.update(
            sae_fvu=float(ev["fvu"]),
            sae_l0=float(ev["l0"]),
            sae_dead_frac=float(ev["dead_frac"]),
            sae_mean_max_cos=rec["mean_max_cos"],
            sae_frac_recovered=rec["frac_recovered"],
            sae_random_mean_max_cos=rec["random_mean_max_cos"],
        )
    return out


def plot_toy(model: ToyModel, threshold: float = 0.5):
    """Elhage-style figure: the ``WᵀW`` heat map and the feature norms ``‖W_i‖`` coloured
    by superposition ``Σ_{j≠i} (Ŵ_i·W_j)²``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib
    from matplotlib.figure import Figure

    G = model.W.T @ model.W
    lim = max(float(np.abs(G).max()), 1e-12)
    norms = model.feature_norms()
    sup = np.clip(model.superposition(), 0.0, 1.0)
    c = model.cfg
    fig = Figure(figsize=(10, 4.2))
    a0, a1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    im = a0.imshow(G, cmap="RdBu_r", vmin=-lim, vmax=lim)
    a0.set_title("WᵀW")
    a0.set_xlabel("feature j")
    a0.set_ylabel("feature i")
    fig.colorbar(im, ax=a0, fraction=0.046)
    colors = matplotlib.colormaps["viridis"](sup)
    a1.barh(np.arange(len(norms)), norms, color=colors)
    a1.invert_yaxis()
    a1.axvline(threshold, color="grey", lw=0.8, ls="--")
    a1.set_xlabel("‖W_i‖ (colour: superposition Σ_j≠i (Ŵ_i·W_j)², 0 → 1)")
    a1.set_ylabel("feature i")
    a1.set_title(
        f"{c.n_features} → {c.n_hidden}, p={c.p}, {c.hidden_activation}: "
        f"{model.features_per_dimension():.2f} features/dim"
    )
    fig.set_layout_engine("tight")
    return fig


__all__ = [
    "ACTIVATIONS",
    "ToyConfig",
    "ToyModel",
    "plot_toy",
    "sae_recovery",
    "sample_features",
    "summary",
    "toy_sae",
    "train_toy",
    "train_toys",
]
