"""Multi-view supervised contrastive (MVSC) loss of MM-CKD.

The pool holds, for every clip of the batch, the unit-norm projected embedding ("view") of each
network that can see the clip (teacher and students). For an anchor view a, its positives P(a) are
all other views of the same clip (cross-modal knowledge) and all views of other clips of the same
sentiment class (cross-sample knowledge, supervised); every other view of the pool is in the
denominator. With the supervised contrastive loss of Khosla et al. (2020, "L_out"):

    L = mean over anchors a with P(a) non-empty of
        -1/|P(a)| * sum_{p in P(a)} log( exp(z_a.z_p / t) / sum_{n != a} exp(z_a.z_n / t) )
"""

from __future__ import annotations

import torch

from mmckd.model.config import CLASS_SCHEMES


def sentiment_classes(y: torch.Tensor, scheme: str = "3class", neutral_band: float = 0.0) -> torch.Tensor:
    """Integer sentiment class of each label.

    "3class": 0 negative (y < -b), 1 neutral (-b <= y <= b), 2 positive (y > b), b = neutral_band;
    "7class": clip(round(y), -3, 3) + 3 (round half to even, like numpy);
    "2class": 1 when y >= 0, 0 when y < 0.
    """
    if scheme == "3class":
        return torch.where(y < -neutral_band, 0, torch.where(y > neutral_band, 2, 1)).long()
    if scheme == "7class":
        return (torch.clamp(torch.round(y), -3, 3) + 3).long()
    if scheme == "2class":
        return (y >= 0).long()
    raise ValueError(f"class scheme must be one of {CLASS_SCHEMES}; got {scheme!r}")


def supervised_contrastive_loss(
    views: torch.Tensor, sample_ids: torch.Tensor, classes: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The MVSC loss of a pool of views.

    views: (V, p) unit-norm embeddings; sample_ids: (V,) which clip each view belongs to; classes:
    (V,) the sentiment class of that clip. Returns a scalar (0 with a graph when no anchor has a positive).
    """
    v = views.shape[0]
    if v < 2:
        return views.sum() * 0.0
    sim = views @ views.T / temperature
    eye = torch.eye(v, dtype=torch.bool, device=views.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = ((sample_ids[:, None] == sample_ids[None, :]) | (classes[:, None] == classes[None, :])) & ~eye
    n_pos = positive.sum(1)
    has = n_pos > 0
    if not has.any():
        return views.sum() * 0.0
    pos_log_prob = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1)
    return -(pos_log_prob[has] / n_pos[has]).mean()


def pooled_mvsc_loss(
    rows: torch.Tensor,
    views: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    scheme: str = "3class",
    neutral_band: float = 0.0,
    positives: str = "clip+class",
) -> torch.Tensor:
    """MVSC over a pool of views already concatenated: views (V, p) unit-norm, rows (V,) the batch position
    of each view's clip, labels (B,) the batch labels. positives: "clip+class" (the paper: other views of the
    same clip and views of other clips of the same class) or "clip" (other views of the same clip only)."""
    if positives == "clip":
        classes = rows
    else:
        classes = sentiment_classes(labels, scheme, neutral_band)[rows]
    return supervised_contrastive_loss(views, rows, classes, temperature)


def mvsc_loss(
    network_views: dict[str, tuple[torch.Tensor, torch.Tensor]],
    labels: torch.Tensor,
    temperature: float,
    scheme: str = "3class",
    neutral_band: float = 0.0,
) -> torch.Tensor:
    """MVSC over the views of several networks on one batch.

    network_views: subset -> (rows, views) where rows (k,) are the batch positions the network could
    see and views (k, p) its unit-norm projections of them; labels: (B,) the batch labels.
    Networks that cannot see a clip contribute no view of it.
    """
    rows = torch.cat([r for r, _ in network_views.values()])
    views = torch.cat([z for _, z in network_views.values()])
    return pooled_mvsc_loss(rows, views, labels, temperature, scheme, neutral_band)
