"""GW-map: Gromov-Wasserstein alignment of image cells with scRNA-seq cells.

The two sides share no features; entropic Gromov-Wasserstein transport matches the
geometry of each space (intra-domain costs), then the coupling transfers labels, co-embeds
image cells in the RNA space, imputes genes, and "couple, then predict" finds the genes
that image features predict, grouped into a module hierarchy.

>>> import sparsecell as spc
>>> res = spc.gwmap.align(adata_img, adata_rna, rep_img="X_pca", rep_rna="X_pca",
...                       cost="knn_geodesic", epsilon=1e-2)            # doctest: +SKIP
>>> res.transfer_labels("cell_type", mode="barycentric")               # doctest: +SKIP

Layers (geometry, problem, solver kept apart as in ott-jax): :mod:`.geometry` (costs),
:func:`solve` (dense torch / POT reference / large-scale quantised solvers on arrays),
:func:`align` (AnnData front end returning a :class:`GWResult`), :mod:`.metrics`,
:mod:`.predict` (couple then predict) and :mod:`.modules` (gene-module hierarchy).
"""

from .align import align
from .geometry import Geometry, geometry, knn_geodesic, label_cost
from .metrics import foscttm, knn_transfer_accuracy, label_transfer_accuracy, silhouette
from .modules import GeneModules, gene_modules
from .predict import couple_then_predict, coupled_targets
from .result import GWResult
from .solve import GWSolution, solve

__all__ = [
    "GWResult",
    "GWSolution",
    "GeneModules",
    "Geometry",
    "align",
    "couple_then_predict",
    "coupled_targets",
    "foscttm",
    "gene_modules",
    "geometry",
    "knn_geodesic",
    "knn_transfer_accuracy",
    "label_cost",
    "label_transfer_accuracy",
    "silhouette",
    "solve",
]
