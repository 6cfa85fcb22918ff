"""Supervised contrastive loss, momentum update and key queue: known answers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sparsecell.encode import Encoder, EncoderConfig
from sparsecell.encode.supcon import (
    KeyQueue,
    contrastive_loss,
    moco_supcon_loss,
    momentum_update,
    supcon_loss,
)

T = 0.07


def _reference(features: torch.Tensor, labels: torch.Tensor, t: float) -> float:
    """Khosla et al. eq. 2 (L_out), by loops."""
    B, V, _ = features.shape
    z = F.normalize(features.double(), dim=-1)
    items = [(z[i, v], int(labels[i])) for v in range(V) for i in range(B)]
    total = 0.0
    for a, (za, ya) in enumerate(items):
        denom = sum(math.exp(float(za @ zb) / t) for b, (zb, _) in enumerate(items) if b != a)
        pos = [b for b, (_, yb) in enumerate(items) if b != a and yb == ya]
        total += -sum(math.log(math.exp(float(za @ items[p][0]) / t) / denom) for p in pos) / len(
            pos
        )
    return total / len(items)


def test_matches_reference_loop():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 2, 5, generator=g)
    y = torch.tensor([0, 1, 0, 2, 1, 0])
    assert float(supcon_loss(f, y, 0.5)) == pytest.approx(_reference(f, y, 0.5), rel=1e-5)


def test_identical_embeddings_give_log_n_minus_one():
    B, V = 8, 2
    f = torch.ones(B, V, 4)
    y = torch.arange(B) % 3
    assert float(supcon_loss(f, y, T)) == pytest.approx(math.log(B * V - 1), rel=1e-5)


def test_clustered_beats_random_and_is_near_its_bound():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(32) % 4
    centres = torch.eye(8)[:4]  # orthogonal class directions
    clustered = centres[y][:, None].repeat(1, 2, 1)
    random = torch.randn(32, 2, 8, generator=g)
    lc, lr = float(supcon_loss(clustered, y, T)), float(supcon_loss(random, y, T))
    assert lc < lr
    # perfect clusters: each anchor has 15 positives with equal logits -> loss = log 15
    assert lc == pytest.approx(math.log(15), abs=1e-3)


def test_invariant_to_permuting_the_batch():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(16, 2, 6, generator=g)
    y = torch.arange(16) % 3
    p = torch.randperm(16, generator=g)
    torch.testing.assert_close(supcon_loss(f, y, T), supcon_loss(f[p], y[p], T))
    # MoCo form: permuting queries, keys and labels together
    q, k = F.normalize(f[:, 0], dim=1), F.normalize(f[:, 1], dim=1)
    torch.testing.assert_close(
        moco_supcon_loss(q, k, y, None, T), moco_supcon_loss(q[p], k[p], y[p], None, T)
    )


def test_selfsup_is_infonce_with_the_queue():
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    k = F.normalize(torch.randn(5, 4, generator=g), dim=1)
    queue = KeyQueue(7, 4)
    queue.enqueue(F.normalize(torch.randn(7, 4, generator=g), dim=1))
    logits = q @ torch.cat([k, queue.keys]).T / T
    expected = F.cross_entropy(logits, torch.arange(5))
    got = moco_supcon_loss(q, k, None, queue, T, mode="selfsup")
    torch.testing.assert_close(got, expected)


def test_supcon_positives_include_queue_keys_of_the_same_label():
    g = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    k = F.normalize(torch.randn(4, 3, generator=g), dim=1)
    y = torch.tensor([0, 1, 0, 1])
    queue = KeyQueue(3, 3)
    qk = F.normalize(torch.randn(3, 3, generator=g), dim=1)
    ql = torch.tensor([1, 1, 0])
    queue.enqueue(qk, ql)
    contrast = torch.cat([k, qk])
    pos = y[:, None] == torch.cat([y, ql])[None]
    expected = contrastive_loss(q, contrast, pos, T)
    torch.testing.assert_close(moco_supcon_loss(q, k, y, queue, T), expected)
    # by hand for anchor 0: positives are keys 0, 2 and queue entry 2
    lp = torch.log_softmax(q[0] @ contrast.T / T, dim=0)
    manual0 = -(lp[0] + lp[2] + lp[6]) / 3
    per_anchor = [-(torch.log_softmax(q[i] @ contrast.T / T, 0)[pos[i]]).mean() for i in range(4)]
    torch.testing.assert_close(per_anchor[0], manual0)
    torch.testing.assert_close(expected, torch.stack(per_anchor).mean())


def test_queue_wraps():
    q = KeyQueue(5, 2)
    a = torch.arange(6.0).reshape(3, 2)
    q.enqueue(a, torch.tensor([0, 1, 2]))
    assert len(q) == 3 and q.ptr == 3
    torch.testing.assert_close(q.contents()[0], a)
    b = 10 + torch.arange(8.0).reshape(4, 2)
    q.enqueue(b, torch.tensor([3, 4, 5, 6]))
    assert len(q) == 5 and q.ptr == 2
    torch.testing.assert_close(q.keys, torch.stack([b[2], b[3], a[2], b[0], b[1]]))
    assert q.labels.tolist() == [5, 6, 2, 3, 4]
    big = 100 + torch.arange(14.0).reshape(7, 2)  # more than fits: the newest 5 stay
    q.enqueue(big, torch.arange(7))
    assert sorted(q.labels.tolist()) == [2, 3, 4, 5, 6]
    assert len(q) == 5


def test_momentum_update_moves_by_one_minus_m():
    cfg = EncoderConfig(in_channels=2, width=4, stages=2, embed_dim=8, proj_dim=4)
    query = Encoder(cfg)
    query.reset_parameters(1)
    key = copy.deepcopy(query)
    key.reset_parameters(2)
    before = [p.detach().clone() for p in key.parameters()]
    qs = [p.detach().clone() for p in query.parameters()]
    m = 0.995
    momentum_update(key, query, m)
    for b, qp, kp in zip(before, qs, key.parameters(), strict=True):
        torch.testing.assert_close(kp.detach(), m * b + (1 - m) * qp, rtol=0, atol=1e-7)
    for qp, p in zip(qs, query.parameters(), strict=True):
        assert torch.equal(qp, p.detach())  # the query encoder is untouched
