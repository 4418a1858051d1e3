"""A plain PyTorch SupCon loss, computed the way the public SupContrast repository does.

The benchmark's peer (benchmarks/supcon.py). Written for this project from the paper's
definition and the repository's recipe, not copied:

  features [bsz, n_views, dim]; labels -> sample mask (label equality; identity without
  labels = SimCLR); the contrast set is the views stacked view-major (view 0 of every
  sample, then view 1, ...); logits = anchors . contrast^T / T with the row max subtracted
  (detached: it cancels in log_prob and only keeps exp from overflowing); self-contrast is
  removed by a logits mask; log_prob = logits - log(sum_a exp(logits_a) * logits_mask);
  each anchor's log_prob is averaged over its positives; loss = -(T / T_base) * mean.

It materialises the full [n_views * bsz, n_views * bsz] similarity and mask matrices, as the
repository does. One difference from jaxml's `supcon_loss`: an anchor with no positive
(possible only with one view) counts here as 0 in the mean (the repository's current
behaviour), while jaxml leaves it out of the mean; with two or more views every anchor has a
positive and the two agree.
"""

from __future__ import annotations

import torch


def supcon_loss(features: torch.Tensor, labels: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, *, temperature: float = 0.1,
                base_temperature: float = 0.07, contrast_mode: str = "all") -> torch.Tensor:
  """Scalar SupCon loss (L_out) of features [bsz, n_views, dim]; see the module docstring."""
  if features.dim() != 3:
    raise ValueError(f"features must be [bsz, n_views, dim], got {tuple(features.shape)}")
  if labels is not None and mask is not None:
    raise ValueError("pass labels or mask, not both")
  bsz, n_views, _ = features.shape
  device = features.device
  if labels is not None:
    labels = labels.reshape(-1, 1)
    sample_mask = (labels == labels.T).to(features.dtype)
  elif mask is not None:
    sample_mask = mask.to(features.dtype)
  else:
    sample_mask = torch.eye(bsz, dtype=features.dtype, device=device)

  contrast = torch.cat(torch.unbind(features, dim=1), dim=0)  # [n_views * bsz, dim]
  if contrast_mode == "all":
    anchors, anchor_views = contrast, n_views
  elif contrast_mode == "one":
    anchors, anchor_views = features[:, 0], 1
  else:
    raise ValueError(f"contrast_mode must be 'all' or 'one', got {contrast_mode!r}")

  logits = anchors @ contrast.T / temperature
  logits = logits - logits.max(dim=1, keepdim=True).values.detach()

  num_anchors, num_contrast = logits.shape
  # Anchor k is contrast column k (both are view-major), so self-pairs are the diagonal.
  not_self = torch.ones(num_anchors, num_contrast, dtype=features.dtype, device=device)
  not_self[torch.arange(num_anchors, device=device), torch.arange(num_anchors, device=device)] = 0
  positives = sample_mask.repeat(anchor_views, n_views) * not_self

  log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(dim=1, keepdim=True))
  num_positives = positives.sum(dim=1)
  num_positives = torch.where(num_positives < 1e-6, torch.ones_like(num_positives),
                              num_positives)
  mean_log_prob_pos = (positives * log_prob).sum(dim=1) / num_positives
  loss = -(temperature / base_temperature) * mean_log_prob_pos
  return loss.mean()
