"""Ghost clipping: per-example clipped gradient sums without per-example gradients.

Guarantee (the same as `clipping.clipped_grad`, which this matches to float rounding):
`ghost_clipped_grad(loss_fn, C, graphdef=g)(params, model_state, batch).grads` is
sum_i clip_C(grad_params L_i) over the valid rows of the batch, so adding or removing one
example moves it by at most `sensitivity` = C in L2 norm (with `per_layer_clip_norms`, each
group of parameters is clipped to its own norm and the sensitivity is sqrt(sum_l C_l^2), as in
`clipping`). Padding rows (`mask` 0) and valid rows whose gradient is non-finite contribute
exactly zero (selected with `jnp.where`) and the latter are counted in `num_nonfinite`; `norms`
are the unclipped per-example norms (0 there). `microbatch_size` runs the same computation on
that many rows at a time (the row layout of `clipping.clipped_grad`), bounding memory.

Contract for `loss_fn(model, examples) -> [B]`: the per-example losses of a merged NNX model on
the batch without `mask` (`logits_loss` builds one from a loss on logits). The model must be
per-example: no layer may mix rows of the batch (BatchNorm is rejected with ValueError), and
every layer with a rule (`ghost_rules`: exact nnx.Linear, nnx.Conv with zero/SAME/VALID padding
and one feature group, nnx.LinearGeneral without batch axes, nnx.Embed, nnx.LayerNorm and
nnx.GroupNorm) must take inputs whose leading axis is the batch and must use its parameters only
through its own `__call__` (no weight tying through `.kernel` or `Embed.attend`).

How (one forward and one backward pass, "book-keeping" style):
  1. The model is merged inside the traced function and each supported layer's class is swapped
     for a subclass whose `__call__` records what its rule needs (input, gathered indices, or
     the normalised input) and adds a zero "tap" to its output y. Swapping `__class__` on the
     freshly merged copy touches no other model and no global state (the active recorder is a
     ContextVar), and runs the layer's own `__call__`, so dtype promotion, precision and
     padding stay flax's. (NNX in flax 0.12 has no method intercept.)
  2. `jax.grad` of the SUM of per-example losses w.r.t. the taps gives every g_i = dL_i/dy_i at
     once (rows do not mix), without computing any weight gradient.
  3. Each layer's rule (`ghost_rules`) turns its records and g into per-example squared norms
     per parameter; with the clip factors c_i from their total, the same records give the
     clipped sum directly (e.g. A^T diag(c) G): no second backward pass, and immune to NaN in
     excluded rows because those rows are removed with `where` before any contraction.
Parameters no rule covers (a layer type without a rule, a call on an input without the batch
axis) fall back to per-example gradients by vmap restricted to those parameters, which still
differentiates the whole network per example. `fallback_parameters` lists them for a model and
batch, and `allow_fallback=False` makes their presence a ValueError naming them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxml.privacy import ghost_rules as rules
from jaxml.privacy.clipping import (ClippedGrad, check_microbatch_size, clip_factors,
                                    clip_sensitivity, layer_groups, masked_norms,
                                    scan_microbatches, split_mask)

# Layers that mix examples: their per-example gradients are not defined by one example alone.
CROSS_EXAMPLE_LAYERS = (nnx.BatchNorm,)


class _Recorder:
  """Collects (layer path, record) per call and adds the matching tap to each output."""

  def __init__(self, paths: dict[int, tuple], taps: list | None, tapped: set | None):
    self.paths, self.taps, self.tapped = paths, taps, tapped
    self.calls: list[tuple[tuple, jax.Array, Any]] = []  # (path, record, output shape/dtype)

  def wants(self, module) -> bool:
    path = self.paths.get(id(module))
    return path is not None and (self.tapped is None or path in self.tapped)

  def __call__(self, module, recorded, outputs):
    if not self.wants(module):
      return outputs
    if self.taps is not None:
      outputs = outputs + self.taps[len(self.calls)]
    self.calls.append((self.paths[id(module)], recorded,
                       jax.ShapeDtypeStruct(outputs.shape, outputs.dtype)))
    return outputs


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
    tapped_class = rules.TAPPED.get(type(node))  # exact type: a subclass may change the math
    if tapped_class is not None:
      object.__setattr__(node, "__class__", tapped_class)
      paths[id(node)] = tuple(path)
  return paths


def _run(loss_fn, graphdef, param_state, model_state, examples, taps, tapped):
  """(losses [B], recorded calls, {path: module}) of one traced forward pass."""
  model = nnx.merge(graphdef, param_state, model_state, copy=True)
  check_per_example(model)
  recorder = _Recorder(_swap_layers(model), taps, tapped)
  token = rules.ACTIVE.set(recorder)
  try:
    losses = loss_fn(model, examples)
  finally:
    rules.ACTIVE.reset(token)
  return losses, recorder.calls, {tuple(path): node for path, node in nnx.iter_graph(model)}


def _discover(loss_fn, graphdef, params, model_state, examples, batch_size):
  """(tapped layer paths, their output shapes in call order, {path: module}, covered param
  paths), from an abstract trace: which layers run, on what, and which have an exact rule."""
  box = {}

  def trace(param_state):
    losses, calls, modules = _run(loss_fn, graphdef, param_state, model_state, examples,
                                  None, None)
    box.update(calls=[(p, jax.ShapeDtypeStruct(x.shape, x.dtype), s) for p, x, s in calls],
               modules=modules)
    return losses

  jax.eval_shape(trace, params)
  modules, ok = box["modules"], {}
  for path, recorded, _ in box["calls"]:
    ok[path] = ok.get(path, True) and rules.supported(modules[path], recorded, batch_size)
  tapped = {p for p, good in ok.items() if good}
  out_shapes = [s for p, _, s in box["calls"] if p in tapped]
  covered = {p + (name,) for p in tapped for name in rules.param_names(modules[p])}
  return tapped, out_shapes, modules, covered


def _name(path) -> str:
  return "/".join(map(str, path))


def fallback_parameters(loss_fn: Callable[[nnx.Module, Any], jax.Array], graphdef, params,
                        model_state, batch) -> list[str]:
  """Names ("a/b/kernel") of the parameters ghost clipping would clip by per-example vmap for
  this model and batch (shapes matter, values do not); [] when every parameter has a rule."""
  examples, _ = split_mask(batch)
  batch_size = jax.tree.leaves(examples)[0].shape[0]
  *_, covered = _discover(loss_fn, graphdef, params, model_state, examples, batch_size)
  return [_name(p) for p, _ in nnx.to_flat_state(params) if tuple(p) not in covered]


def _clip_groups(params, l2_clip_norm, per_layer_clip_norms) -> list[tuple[float, list]]:
  """[(clip norm, [param paths])]: one group of every parameter, or the per-layer groups."""
  flat = list(nnx.to_flat_state(params))
  paths = [tuple(p) for p, _ in flat]
  if per_layer_clip_norms is None:
    return [(float(l2_clip_norm), paths)]
  labels = nnx.from_flat_state([(p, v.replace(value=i)) for i, (p, v) in enumerate(flat)])
  return [(c, [paths[i] for i in jax.tree.leaves(sub)])
          for c, sub in layer_groups(per_layer_clip_norms, labels)]


def ghost_clipped_grad(loss_fn: Callable[[nnx.Module, Any], jax.Array],
                       l2_clip_norm: float | None = None, *, graphdef,
                       per_layer_clip_norms=None, microbatch_size: int | None = None,
                       allow_fallback: bool = True,
                       return_losses: bool = False) -> Callable[..., Any]:
  """Returns fn(params, model_state, batch) -> ClippedGrad (or (ClippedGrad, losses [B])).

  `loss_fn(model, examples)` gives the per-example losses [B] of the merged model
  `nnx.merge(graphdef, params, model_state)` on the batch without `mask` (see the module
  docstring for the contract). `batch` may hold `mask` [B]. `l2_clip_norm`,
  `per_layer_clip_norms` and `microbatch_size` mean what they mean in `clipping.clipped_grad`.
  `allow_fallback=False` raises ValueError (at trace time) naming any parameter without a ghost
  rule instead of clipping it by per-example vmap. Jit- and sharding-friendly: under jit with a
  `data`-sharded batch every contraction over the batch becomes a cross-device sum.
  """
  sensitivity = clip_sensitivity(l2_clip_norm, per_layer_clip_norms)
  check_microbatch_size(microbatch_size)

  def clip_chunk(params, model_state, examples, valid):
    batch_size = valid.shape[0]
    tapped, out_shapes, modules, covered = _discover(loss_fn, graphdef, params, model_state,
                                                     examples, batch_size)
    ghost_params, other_params = nnx.split_state(params, lambda p, _: tuple(p) in covered, ...)
    other_paths = [tuple(p) for p, _ in nnx.to_flat_state(other_params)]
    if other_paths and not allow_fallback:
      raise ValueError("ghost clipping has no rule for parameters "
                       f"{', '.join(map(_name, other_paths))} (allow_fallback=False)")

    # One forward and one backward pass, w.r.t. the taps only: every example's g_i.
    def tapped_loss(taps):
      losses, calls, _ = _run(loss_fn, graphdef, params, model_state, examples, taps, tapped)
      return jnp.sum(losses), (losses, [(p, x) for p, x, _ in calls])

    zero_taps = [jnp.zeros(s.shape, s.dtype) for s in out_shapes]
    (_, (losses, calls)), tap_grads = jax.value_and_grad(tapped_loss, has_aux=True)(zero_taps)
    by_layer: dict[tuple, tuple[list, list]] = {}
    for (path, x), g in zip(calls, tap_grads):
      by_layer.setdefault(path, ([], []))
      by_layer[path][0].append(x)
      by_layer[path][1].append(g)
    data = {path: rules.prepare(modules[path], xs, gs, batch_size)
            for path, (xs, gs) in by_layer.items()}

    # Squared norms per parameter: from the rules, and from per-example vmap for the rest.
    sq = {}
    for path, layer_data in data.items():
      for name, v in rules.sq_norms(modules[path], layer_data).items():
        sq[path + (name,)] = v
    explicit = {}
    if other_paths:
      def one_example(other, example):
        model = nnx.merge(graphdef, ghost_params, other, model_state, copy=True)
        return loss_fn(model, jax.tree.map(lambda v: v[None], example))[0]
      other_grads = jax.vmap(jax.grad(one_example), in_axes=(None, 0))(other_params, examples)
      for path, v in nnx.to_flat_state(other_grads):
        v = v.get_value() if isinstance(v, nnx.Variable) else v
        explicit[tuple(path)] = v.astype(jnp.float32).reshape(batch_size, -1)
        sq[tuple(path)] = jnp.sum(jnp.square(explicit[tuple(path)]), 1)

    # Clip factors per group; one non-finite parameter excludes the whole example.
    total = jnp.sqrt(sum(sq.values(), jnp.zeros((batch_size,), jnp.float32)))
    example_ok = valid & jnp.isfinite(total)
    factors = {}
    for clip, paths in _clip_groups(params, l2_clip_norm, per_layer_clip_norms):
      group_sq = sum((sq[p] for p in paths if p in sq), jnp.zeros((batch_size,), jnp.float32))
      factors.update(dict.fromkeys(paths, clip_factors(jnp.sqrt(group_sq), clip, example_ok)))

    sums = {}
    for path, layer_data in data.items():
      names = rules.param_names(modules[path])
      layer_sums = rules.clipped_sums(modules[path], layer_data,
                                      {n: factors[path + (n,)] for n in names})
      sums.update({path + (n,): s for n, s in layer_sums.items()})
    for path, v in explicit.items():
      f = factors[path][:, None]
      sums[path] = jnp.sum(jnp.where(f > 0, v * f, 0.0), axis=0)
    flat = [(path, var.replace(value=sums[tuple(path)].reshape(var.get_value().shape)))
            for path, var in nnx.to_flat_state(params)]
    norms, num_nonfinite = masked_norms(total, valid)
    return nnx.from_flat_state(flat), (norms, losses), num_nonfinite

  def fn(params, model_state, batch):
    examples, valid = split_mask(batch)
    batch_size = jax.tree.leaves(examples)[0].shape[0]
    if valid is None:
      valid = jnp.ones((batch_size,), bool)
    chunk = lambda p, e, v: clip_chunk(p, model_state, e, v)
    if microbatch_size is None or microbatch_size >= batch_size:
      sums, (norms, losses), num_nonfinite = chunk(params, examples, valid)
    else:
      sums, (norms, losses), num_nonfinite = scan_microbatches(
          chunk, params, examples, valid, batch_size, microbatch_size)
    grads = jax.tree.map(lambda s, p: s.astype(jnp.result_type(p)), sums, params)
    result = ClippedGrad(grads=grads, norms=norms, num_nonfinite=num_nonfinite,
                         sensitivity=sensitivity)
    return (result, losses) if return_losses else result

  return fn


def logits_loss(per_example_loss: Callable[[jax.Array, Any], jax.Array],
                input_key: str) -> Callable[[nnx.Module, Any], jax.Array]:
  """loss_fn(model, examples) = per_example_loss(model(examples[input_key], train=True),
  examples): the model reads the batch field `input_key`."""
  return lambda model, examples: per_example_loss(model(examples[input_key], train=True), examples)
