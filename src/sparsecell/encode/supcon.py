"""Supervised contrastive loss (Khosla et al. 2020) and its MoCo-style momentum queue.

Two forms of the same loss (the ``L_out`` variant: the mean over positives sits outside
the log):

- :func:`supcon_loss`: the in-batch form of the paper — ``B × V × d`` views, every view
  an anchor, contrast = all other views of the batch; without labels it is SimCLR's loss.
- :func:`moco_supcon_loss`: the seed paper's form — queries from the trained encoder
  against keys from a momentum encoder (the current batch's keys + a queue of earlier
  keys). ``supcon``: positives are all keys with the anchor's label; ``selfsup``: the only
  positive is the key of the anchor's own unit (MoCo's InfoNCE).

Both reduce to :func:`contrastive_loss`, which takes an explicit positive mask.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def contrastive_loss(
    anchors: torch.Tensor,
    contrast: torch.Tensor,
    positives: torch.Tensor,
    temperature: float = 0.07,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over anchors of ``-1/|P(i)| Σ_{p∈P(i)} log softmax_a(z_i·z_a / τ)_p``.

    Parameters
    ----------
    anchors
        ``B × d`` L2-normalised anchor vectors.
    contrast
        ``K × d`` L2-normalised vectors the anchors are contrasted with.
    positives
        ``B × K`` boolean: which contrast vectors are positives of each anchor.
    temperature
        τ.
    valid
        ``B × K`` or ``K`` boolean: which contrast vectors take part in the softmax
        (default all); e.g. excludes each anchor itself in the in-batch form.

    Anchors without a positive do not count. Computed in float32 without host
    synchronisation.
    """
    logits = (anchors.float() @ contrast.float().T) / temperature
    pos = positives.bool()
    if valid is not None:
        v = valid.bool()
        if v.dim() == 1:
            v = v[None, :].expand_as(logits)
        logits = logits.masked_fill(~v, float("-inf"))
        pos = pos & v
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = pos.sum(dim=1)
    mean_log_pos = log_prob.masked_fill(~pos, 0.0).sum(dim=1) / n_pos.clamp_min(1)
    has = (n_pos > 0).float()
    return -(mean_log_pos * has).sum() / has.sum().clamp_min(1.0)


def supcon_loss(
    features: torch.Tensor, labels: torch.Tensor | None = None, temperature: float = 0.07
) -> torch.Tensor:
    """In-batch supervised contrastive loss of Khosla et al. (2020).

    Parameters
    ----------
    features
        ``B × V × d`` (V views per unit) or ``B × d``; normalised to unit length here.
    labels
        ``B`` integer labels; ``None`` makes the views of one unit its only positives
        (SimCLR).
    temperature
        τ.
    """
    if features.dim() == 2:
        features = features[:, None]
    B, V, _ = features.shape
    z = F.normalize(features.float(), dim=-1).transpose(0, 1).reshape(B * V, -1)
    ids = torch.arange(B, device=z.device) if labels is None else labels.to(z.device)
    ids = ids.repeat(V)
    not_self = ~torch.eye(B * V, dtype=torch.bool, device=z.device)
    pos = (ids[:, None] == ids[None, :]) & not_self
    return contrastive_loss(z, z, pos, temperature, valid=not_self)


class KeyQueue(nn.Module):
    """A ring buffer of the last ``size`` keys (and their labels) from the momentum encoder.

    Buffers are ``keys`` (``size × dim``) and ``labels`` (``size``); ``ptr`` (next slot)
    and ``filled`` (valid entries) are host integers, so reading and writing never wait
    for the device.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = int(size)
        self.register_buffer("keys", torch.zeros(self.size, dim))
        self.register_buffer("labels", torch.full((self.size,), -1, dtype=torch.long))
        self.ptr = 0
        self.filled = 0

    def __len__(self) -> int:
        return self.filled

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Write ``keys`` (oldest first) over the oldest entries, wrapping around."""
        if self.size == 0:
            return
        if labels is None:
            labels = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
        keys, labels = keys.detach(), labels.detach()
        if keys.shape[0] > self.size:
            keys, labels = keys[-self.size :], labels[-self.size :]
        b = keys.shape[0]
        first = min(b, self.size - self.ptr)
        self.keys[self.ptr : self.ptr + first] = keys[:first].to(self.keys.dtype)
        self.labels[self.ptr : self.ptr + first] = labels[:first]
        if first < b:
            self.keys[: b - first] = keys[first:].to(self.keys.dtype)
            self.labels[: b - first] = labels[first:]
        self.ptr = (self.ptr + b) % self.size
        self.filled = min(self.size, self.filled + b)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(keys, labels)`` of the valid entries (in slot order, not age order)."""
        return self.keys[: self.filled], self.labels[: self.filled]


def moco_supcon_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor | None,
    queue: KeyQueue | None = None,
    temperature: float = 0.07,
    mode: str = "supcon",
) -> torch.Tensor:
    """Queries against the batch's keys and the queue.

    Parameters
    ----------
    q
        ``B × d`` normalised queries (trained encoder, one augmented view).
    k
        ``B × d`` normalised keys (momentum encoder, the other view), row i from unit i.
    labels
        ``B`` integer labels (``supcon``); ignored in ``selfsup``.
    queue
        Earlier keys (read, not updated: enqueue after the step).
    temperature
        τ.
    mode
        ``supcon`` or ``selfsup``.
    """
    B = q.shape[0]
    if queue is not None and len(queue):
        qk, ql = queue.contents()
        contrast = torch.cat([k, qk.to(k.dtype)])
    else:
        qk = ql = None
        contrast = k
    if mode == "supcon":
        if labels is None:
            raise ValueError("supcon mode needs labels")
        all_labels = labels if ql is None else torch.cat([labels, ql])
        pos = labels[:, None] == all_labels[None, :]
    elif mode == "selfsup":
        pos = torch.zeros(B, contrast.shape[0], dtype=torch.bool, device=q.device)
        pos[:, :B] = torch.eye(B, dtype=torch.bool, device=q.device)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return contrastive_loss(q, contrast, pos, temperature)


@torch.no_grad()
def momentum_update(key: nn.Module, query: nn.Module, m: float) -> None:
    """``θ_key ← m · θ_key + (1 - m) · θ_query`` for every parameter (buffers untouched)."""
    kp = [p.data for p in key.parameters()]
    qp = [p.data for p in query.parameters()]
    _lerp(kp, qp, 1.0 - m)


def _lerp(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor], w: float) -> None:
    a, b = list(a), list(b)
    if hasattr(torch, "_foreach_lerp_"):
        torch._foreach_lerp_(a, b, w)
    else:  # pragma: no cover - old torch
        for x, y in zip(a, b, strict=True):
            x.lerp_(y, w)


__all__ = ["KeyQueue", "contrastive_loss", "moco_supcon_loss", "momentum_update", "supcon_loss"]
