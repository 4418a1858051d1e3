"""Ghost clipping: per-example clipped gradient sums without per-example gradients.

Guarantee (the same as `clipping.clipped_grad`, which this matches to float rounding):
`ghost_clipped_grad(loss_fn, C, graphdef=g)(params, model_state, batch).grads` is
sum_i clip_C(grad_params L_i) over the valid rows of the batch, so adding or removing one
example moves it by at most `sensitivity` = C in L2 norm. Padding rows (`mask` 0) and valid
rows whose gradient is non-finite contribute exactly zero (selected with `jnp.where`) and the
latter are counted in `num_nonfinite`; `norms` are the unclipped per-example norms (0 there).

Contract for `loss_fn(model, examples) -> [B]`: the per-example losses of a merged NNX model on
the batch without `mask` (`logits_loss` builds one from a loss on logits). The model must be
per-example: no layer may mix rows of the batch (BatchNorm is rejected with ValueError), and
every supported layer (an exact `nnx.Linear`, or an `nnx.Conv` with zero/SAME/VALID padding,
one feature group and no mask) must take inputs whose leading axis is the batch and must use
its kernel/bias only through its own `__call__` (no weight tying through `.kernel`).

How (one forward and one backward pass for the supported layers, "book-keeping" style):
  1. The model is merged inside the traced function and each supported layer's class is swapped
     for a subclass whose `__call__` records its input a and adds a zero "tap" to its output y.
     Swapping `__class__` on the freshly merged copy touches no other model and no global state
     (the active recorder is a ContextVar), and runs the layer's own `__call__`, so dtype
     promotion, precision and padding stay flax's. (NNX in flax 0.12 has no method intercept.)
  2. `jax.grad` of the SUM of per-example losses w.r.t. the taps gives every g_i = dL_i/dy_i at
     once (rows do not mix), without computing any weight gradient.
  3. Per layer, with a_i as [T, d_in] (T = 1 for dense inputs, positions or im2col patches for
     sequences/convs; several calls of one layer are concatenated along T) and g_i [T, d_out]:
     ||dW_i||^2 = |a_i|^2 |g_i|^2 when T = 1, <A_i A_i^T, G_i G_i^T> when T^2 <= d_in d_out, else
     the explicit per-example dW_i = a_i^T g_i (cheaper then; Bu et al.'s mixed ghost clipping);
     ||db_i||^2 = |sum_t g_it|^2.
  4. With c_i = clip_factors(norms), the clipped sum is sum_i c_i a_i^T g_i = A^T diag(c) G,
     formed directly from the recorded a and g: no second backward pass (Bu et al.'s
     book-keeping trick, which is cheaper than re-differentiating sum_i c_i L_i, and immune to
     NaN in excluded rows because those rows are removed with `where` before any contraction).
Parameters of other layers (LayerNorm/GroupNorm scales, embeddings, ...) fall back to per-example
gradients by vmap restricted to those parameters (the network is still differentiated per
example, so a model with many of them costs about what the vmap path does); their squared norms
add to the ghost ones (norm = sqrt of the sum of squares over all parameters).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.linear import canonicalize_padding

from jaxml.privacy.clipping import (ClippedGrad, clip_factors, clip_sensitivity, masked_norms,
                                    split_mask)

# Layers that mix examples: their per-example gradients are not defined by one example alone.
CROSS_EXAMPLE_LAYERS = (nnx.BatchNorm,)

_ACTIVE = contextvars.ContextVar("jaxml_ghost_recorder", default=None)


class _Recorder:
  """Collects (layer path, input) per call and adds the matching tap to each output."""

  def __init__(self, paths: dict[int, tuple], taps: list | None, tapped: set | None):
    self.paths, self.taps, self.tapped = paths, taps, tapped
    self.calls: list[tuple[tuple, jax.Array, Any]] = []  # (path, input, output shape/dtype)

  def __call__(self, module, inputs, outputs):
    path = self.paths.get(id(module))
    if path is None or (self.tapped is not None and path not in self.tapped):
      return outputs
    if self.taps is not None:
      outputs = outputs + self.taps[len(self.calls)]
    self.calls.append((path, inputs, jax.ShapeDtypeStruct(outputs.shape, outputs.dtype)))
    return outputs


class _TappedLinear(nnx.Linear):
  def __call__(self, inputs, out_sharding=None):
    outputs = nnx.Linear.__call__(self, inputs, out_sharding)
    recorder = _ACTIVE.get()
    return outputs if recorder is None else recorder(self, inputs, outputs)


class _TappedConv(nnx.Conv):
  def __call__(self, inputs, out_sharding=None):
    outputs = nnx.Conv.__call__(self, inputs, out_sharding)
    recorder = _ACTIVE.get()
    return outputs if recorder is None else recorder(self, inputs, outputs)


_TAPPED = {nnx.Linear: _TappedLinear, nnx.Conv: _TappedConv}


def check_per_example(model: nnx.Module) -> None:
  """Raises ValueError naming the first layer that mixes examples (BatchNorm)."""
  for path, node in nnx.iter_graph(model):
    if isinstance(node, CROSS_EXAMPLE_LAYERS):
      name = "/".join(map(str, path)) or "<root>"
      raise ValueError(
          f"layer {name} ({type(node).__name__}) mixes examples in a batch, so per-example "
          "gradients (DP-SGD clipping) are undefined; use a GroupNorm/LayerNorm variant "
          "(e.g. resnet norm='group')")


def _swap_layers(model: nnx.Module) -> dict[int, tuple]:
  """Swaps supported layers of a freshly merged model to tapped classes; id -> path."""
  paths = {}
  for path, node in nnx.iter_graph(model):
    tapped_class = _TAPPED.get(type(node))  # exact type: a subclass may change the math
    if tapped_class is not None:
      object.__setattr__(node, "__class__", tapped_class)
      paths[id(node)] = tuple(path)
  return paths


def _conv_supported(conv: nnx.Conv, inputs_ndim: int) -> bool:
  padding = canonicalize_padding(conv.padding, len(conv.kernel_size))
  return (conv.feature_group_count == 1 and conv.mask is None
          and inputs_ndim == len(conv.kernel_size) + 2
          and padding not in ("CIRCULAR", "REFLECT", "CAUSAL"))


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


def _layer_rows(layer, inputs, out_grads, batch_size):
  """(a [B, T, d_in], g [B, T, d_out]) in float32, all calls of the layer joined along T."""
  a_parts, g_parts = [], []
  for x, g in zip(inputs, out_grads):
    if isinstance(layer, nnx.Conv):
      x = _conv_patches(layer, x)
    a_parts.append(x.reshape(batch_size, -1, x.shape[-1]).astype(jnp.float32))
    g_parts.append(g.reshape(batch_size, -1, g.shape[-1]).astype(jnp.float32))
  return jnp.concatenate(a_parts, axis=1), jnp.concatenate(g_parts, axis=1)


def _use_gram(a, g) -> bool:
  """Gram form when T^2 <= d_in * d_out (cheaper than the explicit per-example kernel grad)."""
  return a.shape[1] * a.shape[1] <= a.shape[2] * g.shape[2]


def _layer_sq_norms(layer, a, g):
  """[B] squared norms of each example's kernel (and bias) gradient. NaN stays in its row."""
  if a.shape[1] == 1:
    sq = jnp.sum(a[:, 0] ** 2, -1) * jnp.sum(g[:, 0] ** 2, -1)
  elif _use_gram(a, g):
    sq = jnp.einsum("bts,bts->b", a @ jnp.swapaxes(a, 1, 2), g @ jnp.swapaxes(g, 1, 2))
  else:
    sq = jnp.sum(jnp.einsum("bti,bto->bio", a, g) ** 2, axis=(1, 2))
  if layer.bias is not None:
    sq = sq + jnp.sum(jnp.sum(g, axis=1) ** 2, -1)
  return sq


def _layer_clipped_sums(layer, a, g, keep, factors):
  """{"kernel", "bias"}: sum_i c_i dW_i = A^T diag(c) G, excluded rows removed by `where` first."""
  keep3 = keep[:, None, None]
  weighted_g = jnp.where(keep3, g * factors[:, None, None], 0.0)
  kernel_sum = jnp.einsum("bti,bto->io", jnp.where(keep3, a, 0.0), weighted_g)
  if isinstance(layer, nnx.Conv):  # patch features are C_in-major; the kernel is [*k, C_in, O]
    kernel_sum = kernel_sum.reshape(layer.in_features, *layer.kernel_size, g.shape[-1])
    kernel_sum = jnp.moveaxis(kernel_sum, 0, -2)
  sums = {"kernel": kernel_sum.reshape(layer.kernel.shape)}
  if layer.bias is not None:
    sums["bias"] = jnp.sum(weighted_g, axis=1).sum(0)
  return sums


def ghost_clipped_grad(loss_fn: Callable[[nnx.Module, Any], jax.Array], l2_clip_norm: float,
                       *, graphdef, return_losses: bool = False) -> Callable[..., Any]:
  """Returns fn(params, model_state, batch) -> ClippedGrad (or (ClippedGrad, losses [B])).

  `loss_fn(model, examples)` gives the per-example losses [B] of the merged model
  `nnx.merge(graphdef, params, model_state)` on the batch without `mask` (see the module
  docstring for the contract). `batch` may hold `mask` [B]. Jit- and sharding-friendly: under
  jit with a `data`-sharded batch every contraction over the batch becomes a cross-device sum.
  """
  sensitivity = clip_sensitivity(l2_clip_norm)

  def fn(params, model_state, batch):
    examples, valid = split_mask(batch)
    batch_size = jax.tree.leaves(examples)[0].shape[0]
    if valid is None:
      valid = jnp.ones((batch_size,), bool)

    def run(param_state, taps, tapped):
      model = nnx.merge(graphdef, param_state, model_state, copy=True)
      check_per_example(model)
      recorder = _Recorder(_swap_layers(model), taps, tapped)
      token = _ACTIVE.set(recorder)
      try:
        losses = loss_fn(model, examples)
      finally:
        _ACTIVE.reset(token)
      modules = {path: node for path, node in nnx.iter_graph(model)}
      return losses, recorder.calls, modules

    # Discovery (trace time only): which layers run, on what shapes; which can be ghosted.
    calls_box = {}

    def discover(param_state):
      losses, calls, modules = run(param_state, None, None)
      calls_box["calls"] = [(p, x.ndim, x.shape[0], s) for p, x, s in calls]
      calls_box["modules"] = modules
      return losses

    jax.eval_shape(discover, params)
    modules = calls_box["modules"]
    ok = {}
    for path, ndim, rows, _ in calls_box["calls"]:
      layer = modules[path]
      good = ndim >= 2 and rows == batch_size and (
          not isinstance(layer, nnx.Conv) or _conv_supported(layer, ndim))
      ok[path] = ok.get(path, True) and good
    tapped = {p for p, good in ok.items() if good}
    out_shapes = [s for p, _, _, s in calls_box["calls"] if p in tapped]
    covered = {p + (name,) for p in tapped for name in ("kernel", "bias")}
    is_covered = lambda path, _: tuple(path) in covered
    ghost_params, other_params = nnx.split_state(params, is_covered, ...)

    # One forward and one backward pass, w.r.t. the taps only: every example's g_i.
    def tapped_loss(taps):
      losses, calls, _ = run(params, taps, tapped)
      return jnp.sum(losses), (losses, [(p, x) for p, x, _ in calls])

    zero_taps = [jnp.zeros(s.shape, s.dtype) for s in out_shapes]
    (_, (losses, calls)), tap_grads = jax.value_and_grad(tapped_loss, has_aux=True)(zero_taps)
    by_layer: dict[tuple, tuple[list, list]] = {}
    for (path, x), g in zip(calls, tap_grads):
      by_layer.setdefault(path, ([], []))
      by_layer[path][0].append(x)
      by_layer[path][1].append(g)

    # Fallback: per-example gradients of the parameters no tapped layer owns.
    other_leaves = jax.tree.leaves(other_params)
    if other_leaves:
      def one_example(other, example):
        model = nnx.merge(graphdef, ghost_params, other, model_state, copy=True)
        return loss_fn(model, jax.tree.map(lambda v: v[None], example))[0]
      other_grads = jax.vmap(jax.grad(one_example), in_axes=(None, 0))(other_params, examples)
      sq_total = sum(jnp.sum(jnp.square(v.astype(jnp.float32)).reshape(batch_size, -1), 1)
                     for v in jax.tree.leaves(other_grads))
    else:
      other_grads, sq_total = None, jnp.zeros((batch_size,), jnp.float32)

    # Norms first (per-row reductions), then the clipped sums with the factors.
    rows = {path: _layer_rows(modules[path], xs, gs, batch_size)
            for path, (xs, gs) in by_layer.items()}
    for path, (a, g) in rows.items():
      sq_total = sq_total + _layer_sq_norms(modules[path], a, g)
    raw_norms = jnp.sqrt(sq_total)
    factors = clip_factors(raw_norms, l2_clip_norm, valid)
    keep = factors > 0
    norms, num_nonfinite = masked_norms(raw_norms, valid)

    sums = {}
    for path, (a, g) in rows.items():
      layer_sums = _layer_clipped_sums(modules[path], a, g, keep, factors)
      sums.update({path + (name,): s for name, s in layer_sums.items()})
    if other_grads is not None:
      for path, v in nnx.to_flat_state(other_grads):
        v = v.get_value() if isinstance(v, nnx.Variable) else v
        shape = (-1,) + (1,) * (v.ndim - 1)
        scaled = v.astype(jnp.float32) * factors.reshape(shape)
        sums[tuple(path)] = jnp.sum(jnp.where(keep.reshape(shape), scaled, 0.0), axis=0)
    flat = [(path, var.replace(value=sums[tuple(path)].astype(var.get_value().dtype)))
            for path, var in nnx.to_flat_state(params)]
    grads = nnx.from_flat_state(flat)
    result = ClippedGrad(grads=grads, norms=norms, num_nonfinite=num_nonfinite,
                         sensitivity=sensitivity)
    return (result, losses) if return_losses else result

  return fn


def logits_loss(per_example_loss: Callable[[jax.Array, Any], jax.Array],
                input_key: str) -> Callable[[nnx.Module, Any], jax.Array]:
  """loss_fn(model, examples) = per_example_loss(model(examples[input_key], train=True),
  examples): the model reads the batch field `input_key`."""
  return lambda model, examples: per_example_loss(model(examples[input_key], train=True), examples)
