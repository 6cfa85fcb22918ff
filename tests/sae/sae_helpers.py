"""Constants shared by the SAE tests (a uniquely named module: every test folder has its own
conftest.py, and ``from conftest import`` would pick whichever was imported first)."""

from __future__ import annotations

import sparsecell as spc

# Small enough for a 2-core CPU: 4096 rows of 32 dims, 128 latents, 300 steps of 256.
D_IN = 32
K = 3
TRAIN_KW = dict(k=K, expansion=4, seed=0, steps=300, batch_size=256, lr=3e-3, progress=False)
# L1 λ is data-dependent; on this toy data (3 active features per sample) 0.5 keeps a
# sparse but useful code within 300 steps.
ARCH_KW: dict[str, dict] = {"relu": {"sparsity_coeff": 0.5}, "gated": {"sparsity_coeff": 0.5}}
ARCHS = sorted(spc.sae.ARCHITECTURES)
