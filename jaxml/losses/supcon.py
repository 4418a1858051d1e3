"""Supervised Contrastive (SupCon) loss, Khosla et al., NeurIPS 2020, on one device or sharded.

Every embedding of every view is in the contrast set. For an anchor i with positives P(i)
(other embeddings whose sample shares i's label, including i's own other views) and
A(i) = the contrast set without i itself, with s = cosine similarities:

  L_out (form="out", the paper's recommended form, summation outside the log):
    loss_i = -(T / T_base) * mean_{p in P(i)} [ s_ip / T - log sum_{a in A(i)} exp(s_ia / T) ]
  L_in (form="in"):
    loss_i = -(T / T_base) * log( mean_{p in P(i)} exp(s_ip / T) / sum_{a in A(i)} exp(s_ia / T) )

The loss is the mean over anchors that have at least one positive; an anchor without one
contributes nothing (it has no term to average, so counting it would only dilute the mean).
With neither labels nor a mask each sample is its own class, which is SimCLR's NT-Xent.

`sharded_supcon_loss` runs inside `jax.shard_map`: it all-gathers the embeddings so each
device's anchors see the global batch, which is what makes SupCon's many negatives possible
when the batch is split across devices. Both entry points share `_loss_sum_and_count`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

_CONTRAST_MODES = ("all", "one")
_FORMS = ("out", "in")


def _check_args(features, labels, mask, contrast_mode, form, contrast_batch):
  if features.ndim != 3:
    raise ValueError(f"features must be [batch, views, dim], got shape {features.shape}")
  if labels is not None and mask is not None:
    raise ValueError("pass labels or mask, not both")
  if contrast_mode not in _CONTRAST_MODES:
    raise ValueError(f"contrast_mode must be one of {_CONTRAST_MODES}, got {contrast_mode!r}")
  if form not in _FORMS:
    raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
  batch = features.shape[0]
  if labels is not None and labels.shape != (batch,):
    raise ValueError(f"labels must have shape ({batch},), got {labels.shape}")
  if mask is not None and mask.shape != (batch, contrast_batch):
    raise ValueError(f"mask must have shape ({batch}, {contrast_batch}), got {mask.shape}")


def _masked_logsumexp(logits, include):
  """log sum exp(logits) over the last axis where `include`; 0 (finite) on an empty row.

  The row max is taken over included entries only and held constant under differentiation,
  so the exp never overflows and an empty row never produces -inf or NaN gradients.
  """
  row_max = jnp.max(jnp.where(include, logits, -jnp.inf), axis=-1, keepdims=True)
  row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
  total = jnp.sum(jnp.where(include, jnp.exp(logits - row_max), 0.0), axis=-1)
  return jnp.log(jnp.where(total > 0, total, 1.0)) + row_max[..., 0]


def _sample_positives(labels, contrast_labels, mask, is_self):
  """[anchor samples, contrast samples] bool: which samples are positives of which anchors."""
  if mask is not None:
    return mask != 0
  if labels is not None:
    return labels[:, None] == contrast_labels[None, :]
  return is_self  # SimCLR: a sample's own other views are its only positives


def _loss_sum_and_count(anchor_features, anchor_ids, anchor_valid, contrast_features,
                        contrast_valid, sample_positives, *, temperature, base_temperature,
                        contrast_mode, form):
  """Sum of per-anchor losses and the number of anchors that have a positive.

  anchor_features [Na, V, D] (the samples whose views are anchors), anchor_ids [Na] (their
  indices among the contrast samples, to exclude self-contrast), anchor_valid [Na] bool,
  contrast_features [Nc, V, D], contrast_valid [Nc] bool, sample_positives [Na, Nc] bool.
  Returning the sum and count, not the mean, lets the sharded loss combine devices exactly.
  """
  if contrast_mode == "one":
    anchor_features = anchor_features[:, :1]
  num_anchors, anchor_views, _ = anchor_features.shape
  num_contrast, views, _ = contrast_features.shape
  logits = jnp.einsum("iud,jvd->iujv", anchor_features, contrast_features) / temperature

  is_self_sample = anchor_ids[:, None] == jnp.arange(num_contrast)[None, :]
  same_view = jnp.arange(anchor_views)[:, None] == jnp.arange(views)[None, :]
  is_self = is_self_sample[:, None, :, None] & same_view[None, :, None, :]
  in_denominator = ~is_self & contrast_valid[None, None, :, None]
  positive = in_denominator & sample_positives[:, None, :, None]

  shape = (num_anchors * anchor_views, num_contrast * views)
  logits, in_denominator, positive = (x.reshape(shape) for x in (logits, in_denominator, positive))
  log_denominator = _masked_logsumexp(logits, in_denominator)
  num_positives = jnp.sum(positive, axis=-1)
  safe_num_positives = jnp.maximum(num_positives, 1)
  if form == "out":
    log_prob_sum = jnp.sum(jnp.where(positive, logits, 0.0), axis=-1)
    mean_log_prob = log_prob_sum / safe_num_positives - log_denominator
  else:
    mean_log_prob = (_masked_logsumexp(logits, positive) - jnp.log(safe_num_positives)
                     - log_denominator)
  loss = -(temperature / base_temperature) * mean_log_prob

  counted = (num_positives > 0) & jnp.repeat(anchor_valid, anchor_views)
  return jnp.sum(jnp.where(counted, loss, 0.0)), jnp.sum(counted)


def _valid_and_clean(features, valid):
  """Valid flags as bool, and features with invalid rows zeroed.

  Zeroing (a `where`, not a multiply) matters for gradients too: a NaN in a padding row
  would otherwise reach valid rows' gradients through 0 * NaN in the similarity matmul.
  """
  if valid is None:
    return jnp.ones(features.shape[0], bool), features
  valid = jnp.asarray(valid).astype(bool)
  return valid, jnp.where(valid[:, None, None], features, 0.0)


def supcon_loss(features, labels=None, mask=None, *, temperature=0.1, base_temperature=0.07,
                contrast_mode="all", form="out", valid=None):
  """Scalar SupCon loss of one (unsharded) batch.

  Args:
    features: [batch, views, dim], L2-normalised embeddings.
    labels: [batch] ints; samples with equal labels are positives of each other.
    mask: [batch, batch] explicit positives, mask[i, j] != 0 when sample j is a positive of
      anchor i. Its diagonal should be 1 so an anchor's other views count as positives (as
      they do with labels). Pass labels or mask, not both; neither gives SimCLR.
    temperature, base_temperature: T and T_base above; the loss is scaled by T / T_base.
    contrast_mode: "all" (every view is an anchor) or "one" (only view 0 is).
    form: "out" (L_out) or "in" (L_in).
    valid: optional [batch] bool/float; rows with 0 (padding) are neither anchors nor
      contrasts, whatever values their features hold.
  """
  _check_args(features, labels, mask, contrast_mode, form, features.shape[0])
  valid, features = _valid_and_clean(features, valid)
  ids = jnp.arange(features.shape[0])
  positives = _sample_positives(labels, labels, mask, ids[:, None] == ids[None, :])
  total, count = _loss_sum_and_count(
      features, ids, valid, features, valid, positives, temperature=temperature,
      base_temperature=base_temperature, contrast_mode=contrast_mode, form=form)
  return total / jnp.maximum(count, 1)


def sharded_supcon_loss(features, labels=None, mask=None, *, axis_name="data", valid=None,
                        temperature=0.1, base_temperature=0.07, contrast_mode="all",
                        form="out"):
  """SupCon over the global batch, called inside `jax.shard_map` over `axis_name`.

  Arguments are this device's slices: features [local_batch, views, dim], labels and valid
  [local_batch], mask [local_batch, global_batch] (this device's rows of the global mask).
  Local anchors are contrasted against the all-gathered global batch; the result is the
  global mean (equal to `supcon_loss` on the global arrays), identical on every device.
  Gradients reach every device's features through the gather's transpose.
  """
  local_batch = features.shape[0]
  _check_args(features, labels, mask, contrast_mode, form,
              local_batch * jax.lax.axis_size(axis_name))
  valid, features = _valid_and_clean(features, valid)
  gather = functools.partial(jax.lax.all_gather, axis_name=axis_name, tiled=True)
  anchor_ids = jax.lax.axis_index(axis_name) * local_batch + jnp.arange(local_batch)
  contrast_features = gather(features)
  global_ids = jnp.arange(contrast_features.shape[0])
  positives = _sample_positives(labels, None if labels is None else gather(labels), mask,
                                anchor_ids[:, None] == global_ids[None, :])
  total, count = _loss_sum_and_count(
      features, anchor_ids, valid, contrast_features, gather(valid), positives,
      temperature=temperature, base_temperature=base_temperature,
      contrast_mode=contrast_mode, form=form)
  return jax.lax.psum(total, axis_name) / jnp.maximum(jax.lax.psum(count, axis_name), 1)


def supcon_loss_on_mesh(features, labels=None, mask=None, *, axis_name="data", valid=None,
                        mesh=None, **kwargs):
  """`sharded_supcon_loss` on global arrays, batch split over mesh axis `axis_name`.

  Uses `mesh`, or the mesh set with `jax.set_mesh` when it is None. `kwargs` are
  `supcon_loss`'s keyword arguments (temperature, base_temperature, contrast_mode, form).
  """
  arrays = dict(features=features, labels=labels, mask=mask, valid=valid)
  arrays = {name: x for name, x in arrays.items() if x is not None}
  specs = {name: P(axis_name, None) if name == "mask" else P(axis_name) for name in arrays}

  def local_loss(local_arrays):
    return sharded_supcon_loss(**local_arrays, axis_name=axis_name, **kwargs)

  return jax.shard_map(local_loss, mesh=mesh, in_specs=(specs,), out_specs=P())(arrays)
