"""Ghost clipping's per-layer rules: what each supported layer records, and from it each
example's squared gradient norm and the clipped sum, without per-example gradients of the model.

Each rule sees, per example i of a batch of B, what its tapped layer recorded (`recorded`) and
the gradient of example i's loss w.r.t. the layer's output (g_i), for every call of the layer:

  linear   nnx.Linear, nnx.Conv (im2col patches), nnx.LinearGeneral (contracted axes flattened):
           a_i [T, d_in], g_i [T, d_out]; dW_i = a_i^T g_i, db_i = sum_t g_it.
           ||dW_i||^2 = |a_i|^2 |g_i|^2 when T = 1, <A_i A_i^T, G_i G_i^T> when T^2 <= d_in d_out,
           else the explicit dW_i (Bu et al.'s mixed ghost clipping). Clipped sum A^T diag(c) G.
  norm     nnx.LayerNorm, nnx.GroupNorm: the normalised input x̂ (the layer's own normalisation
           run without its affine parameters); dscale_i = sum over positions of g_i ⊙ x̂_i and
           dbias_i = sum of g_i: [B, features] each, so the per-example gradients themselves are
           formed (cheap) and clipped.
  embed    nnx.Embed: the gathered indices idx_i [T]. ||dE_i||^2 = sum_{t,t'} [idx_t = idx_t']
           <g_t, g_t'> (Gram form when T^2 <= rows of the table, else the per-example table by
           scatter-add); clipped sum: scatter-add of c_i g_it into rows idx_it.

Rules return squared norms per parameter name (so per-layer clip norms can group them) and take
one factor vector per parameter name. Rows with factor 0 (padding, non-finite) are removed with
`jnp.where` before any contraction over the batch, so NaN in them cannot leak.
"""

from __future__ import annotations

import contextvars
import math

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import canonicalize_padding

# The active recorder of the traced ghost pass (a ContextVar: no global state between models).
ACTIVE = contextvars.ContextVar("jaxml_ghost_recorder", default=None)


def _tap(layer, recorded, outputs):
  recorder = ACTIVE.get()
  return outputs if recorder is None else recorder(layer, recorded, outputs)


def _wants(layer) -> bool:
  recorder = ACTIVE.get()
  return recorder is not None and recorder.wants(layer)


def _tapped_on_input(base):
  """A subclass of `base` recording its input: Linear, Conv, LinearGeneral (inputs), Embed
  (indices)."""
  def __call__(self, inputs, out_sharding=None):
    return _tap(self, inputs, base.__call__(self, inputs, out_sharding))
  return type(f"_Tapped{base.__name__}", (base,), {"__call__": __call__})


def _without_affine(layer, base_class, x, mask):
  """The layer's own normalisation of x with scale and bias left out (x promoted first, as the
  layer would with its parameters, so x̂ has the dtype and math of the affine call)."""
  scale = layer.scale[...] if layer.scale is not None else None
  bias = layer.bias[...] if layer.bias is not None else None
  x, _, _ = layer.promote_dtype((x, scale, bias), dtype=layer.dtype)
  saved = layer.scale, layer.bias
  object.__setattr__(layer, "scale", None)  # a freshly merged copy, restored below
  object.__setattr__(layer, "bias", None)
  try:
    return base_class.__call__(layer, x, mask=mask)
  finally:
    object.__setattr__(layer, "scale", saved[0])
    object.__setattr__(layer, "bias", saved[1])


def _tapped_on_normalised(base):
  """A subclass of `base` (LayerNorm, GroupNorm) recording the normalised input x̂."""
  def __call__(self, x, *, mask=None):
    outputs = base.__call__(self, x, mask=mask)
    if not _wants(self):
      return outputs
    return _tap(self, _without_affine(self, base, x, mask), outputs)
  return type(f"_Tapped{base.__name__}", (base,), {"__call__": __call__})


# Exact types only: a subclass may change the math.
TAPPED = {**{base: _tapped_on_input(base)
             for base in (nnx.Linear, nnx.Conv, nnx.LinearGeneral, nnx.Embed)},
          **{base: _tapped_on_normalised(base) for base in (nnx.LayerNorm, nnx.GroupNorm)}}
PARAM_NAMES = {nnx.Linear: ("kernel", "bias"), nnx.Conv: ("kernel", "bias"),
               nnx.LinearGeneral: ("kernel", "bias"), nnx.Embed: ("embedding",),
               nnx.LayerNorm: ("scale", "bias"), nnx.GroupNorm: ("scale", "bias")}


def base_type(layer):
  """The flax class a (possibly tapped) supported layer computes as, or None."""
  for cls in type(layer).__mro__:
    if cls in TAPPED:
      return cls
  return None


def param_names(layer) -> tuple[str, ...]:
  """The names of the layer's parameters a rule covers (those that are not None)."""
  return tuple(n for n in PARAM_NAMES[base_type(layer)] if getattr(layer, n, None) is not None)


def _axes(ndim, axes) -> tuple[int, ...]:
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  return tuple(sorted(a % ndim for a in axes))


def _norm_axes(layer, ndim):
  """(reduction axes, feature axes) of a LayerNorm/GroupNorm on an input of rank ndim."""
  if isinstance(layer, nnx.GroupNorm):
    reduction = (layer.reduction_axes if layer.reduction_axes is not None
                 else list(range(1, ndim - 1)) + [-1])
    return _axes(ndim, reduction), _axes(ndim, layer.feature_axis)
  return _axes(ndim, layer.reduction_axes), _axes(ndim, layer.feature_axes)


def supported(layer, recorded, batch_size: int) -> bool:
  """Whether one call (recorded: the ShapeDtypeStruct of what was recorded) has an exact rule."""
  ndim = len(recorded.shape)
  if ndim == 0 or recorded.shape[0] != batch_size:
    return False
  kind = base_type(layer)
  if kind is nnx.Embed:
    return True
  if ndim < 2:
    return False
  if kind is nnx.Conv:
    padding = canonicalize_padding(layer.padding, len(layer.kernel_size))
    return (layer.feature_group_count == 1 and layer.mask is None
            and ndim == len(layer.kernel_size) + 2
            and padding not in ("CIRCULAR", "REFLECT", "CAUSAL"))
  if kind is nnx.LinearGeneral:
    return not layer.batch_axis and 0 not in _axes(ndim, layer.axis)
  if kind in (nnx.LayerNorm, nnx.GroupNorm):
    if layer.axis_name is not None:  # statistics across devices mix examples
      return False
    reduction, features = _norm_axes(layer, ndim)
    return 0 not in reduction and 0 not in features
  return True


def _conv_patches(conv: nnx.Conv, inputs: jax.Array) -> jax.Array:
  """im2col patches [B, *out_spatial, C_in * prod(kernel)] (C_in-major), as the conv sees them."""
  rank = len(conv.kernel_size)
  broadcast = lambda v: ((1,) * rank if v is None else (v,) * rank if isinstance(v, int)
                         else tuple(v))
  spatial = "DHW"[3 - rank:] if rank <= 3 else "".join(chr(ord("a") + i) for i in range(rank))
  return jax.lax.conv_general_dilated_patches(
      inputs, conv.kernel_size, broadcast(conv.strides),
      canonicalize_padding(conv.padding, rank), lhs_dilation=broadcast(conv.input_dilation),
      rhs_dilation=broadcast(conv.kernel_dilation),
      dimension_numbers=("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"),
      precision=jax.lax.Precision.HIGHEST)  # a copy of the input: keep it exact on GPU too


def _rows(x, batch_size, features):
  return x.reshape(batch_size, -1, features).astype(jnp.float32)


def prepare(layer, recorded: list, out_grads: list, batch_size: int):
  """What the rule needs from every call of the layer, all calls joined along positions T."""
  kind = base_type(layer)
  if kind in (nnx.LayerNorm, nnx.GroupNorm):
    grads = {"scale": 0.0, "bias": 0.0}
    for x_hat, g in zip(recorded, out_grads):
      _, features = _norm_axes(layer, x_hat.ndim)
      size = math.prod(x_hat.shape[a] for a in features)
      to_rows = lambda v, features=features, size=size: _rows(
          jnp.moveaxis(v, features, range(-len(features), 0)), batch_size, size)
      product = g.astype(jnp.float32) * x_hat.astype(jnp.float32)
      grads["scale"] = grads["scale"] + jnp.sum(to_rows(product), 1)
      grads["bias"] = grads["bias"] + jnp.sum(to_rows(g), 1)
    return {n: grads[n] for n in param_names(layer)}  # per-example gradients [B, F]
  a_parts, g_parts = [], []
  for x, g in zip(recorded, out_grads):
    if kind is nnx.Embed:
      rows = layer.num_embeddings
      idx = jnp.zeros_like(x) if rows == 1 else jnp.where(x < 0, x + rows, x)
      a_parts.append(idx.reshape(batch_size, -1))
      g_parts.append(_rows(g, batch_size, layer.features))
      continue
    if kind is nnx.Conv:
      x = _conv_patches(layer, x)
    elif kind is nnx.LinearGeneral:
      axes = _axes(x.ndim, layer.axis)
      x = jnp.moveaxis(x, _axes(x.ndim, layer.axis), range(-len(axes), 0))
      x = x.reshape(*x.shape[:x.ndim - len(axes)], -1)
      g = g.reshape(*g.shape[:g.ndim - len(layer.out_features)], -1)
    a_parts.append(_rows(x, batch_size, x.shape[-1]))
    g_parts.append(_rows(g, batch_size, g.shape[-1]))
  return jnp.concatenate(a_parts, axis=1), jnp.concatenate(g_parts, axis=1)


def sq_norms(layer, data) -> dict[str, jax.Array]:
  """{parameter name: [B] squared norm of each example's gradient}. NaN stays in its row."""
  if isinstance(data, dict):
    return {n: jnp.sum(v ** 2, -1) for n, v in data.items()}
  a, g = data
  if base_type(layer) is nnx.Embed:
    return {"embedding": _embed_sq_norms(layer, a, g)}
  if a.shape[1] == 1:
    sq = {"kernel": jnp.sum(a[:, 0] ** 2, -1) * jnp.sum(g[:, 0] ** 2, -1)}
  elif a.shape[1] * a.shape[1] <= a.shape[2] * g.shape[2]:  # Gram form is cheaper
    sq = {"kernel": jnp.einsum("bts,bts->b", a @ jnp.swapaxes(a, 1, 2),
                               g @ jnp.swapaxes(g, 1, 2))}
  else:
    sq = {"kernel": jnp.sum(jnp.einsum("bti,bto->bio", a, g) ** 2, axis=(1, 2))}
  if layer.bias is not None:
    sq["bias"] = jnp.sum(jnp.sum(g, axis=1) ** 2, -1)
  return sq


def _in_range(layer, idx):
  return (idx >= 0) & (idx < layer.num_embeddings)  # out of range: jnp.take's fill, no grad


def _embed_sq_norms(layer, idx, g):
  positions, rows = idx.shape[1], layer.num_embeddings
  g = jnp.where(_in_range(layer, idx)[..., None], g, 0.0)
  if positions * positions <= rows:
    same = idx[:, :, None] == idx[:, None, :]
    return jnp.sum(jnp.where(same, g @ jnp.swapaxes(g, 1, 2), 0.0), axis=(1, 2))
  batch = jnp.broadcast_to(jnp.arange(idx.shape[0])[:, None], idx.shape)
  table = jnp.zeros((idx.shape[0], rows, g.shape[-1]), g.dtype).at[batch, idx].add(g)
  return jnp.sum(table ** 2, axis=(1, 2))


def clipped_sums(layer, data, factors: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """{parameter name: sum_i c_i grad_i (float32, the parameter's shape)}; rows with factor 0
  are removed by `where` first."""
  params = {n: getattr(layer, n) for n in param_names(layer)}
  if isinstance(data, dict):
    return {n: jnp.sum(jnp.where(factors[n][:, None] > 0, v * factors[n][:, None], 0.0),
                       0).reshape(params[n].shape) for n, v in data.items()}
  a, g = data
  weighted = {n: jnp.where(f[:, None, None] > 0, g * f[:, None, None], 0.0)
              for n, f in factors.items()}
  if base_type(layer) is nnx.Embed:
    w = jnp.where(_in_range(layer, a)[..., None], weighted["embedding"], 0.0)
    table = jnp.zeros((layer.num_embeddings, g.shape[-1]), jnp.float32)
    return {"embedding": table.at[a.reshape(-1)].add(w.reshape(-1, g.shape[-1]))}
  keep = factors["kernel"][:, None, None] > 0
  kernel_sum = jnp.einsum("bti,bto->io", jnp.where(keep, a, 0.0), weighted["kernel"])
  if base_type(layer) is nnx.Conv:  # patch features are C_in-major; the kernel is [*k, C_in, O]
    kernel_sum = kernel_sum.reshape(layer.in_features, *layer.kernel_size, g.shape[-1])
    kernel_sum = jnp.moveaxis(kernel_sum, 0, -2)
  sums = {"kernel": kernel_sum.reshape(params["kernel"].shape)}
  if "bias" in params:
    sums["bias"] = jnp.sum(weighted["bias"], axis=(0, 1)).reshape(params["bias"].shape)
  return sums
