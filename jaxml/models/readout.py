"""Early readouts: a small classifier on an intermediate layer that cannot train the trunk.

An early readout's errors, above all its confident ones, mark the examples a network gets
right only through a simple (often spurious) feature: DeDiER (Tiwari et al., WACV 2024)
reweights distillation by them, SiFeR (Tiwari & Shenoy, ICML 2023) "forgets" the features
the readout finds by training the layers below it to make the readout uniform.

Config: `model.readout = {"depth": k, "hidden": h}`. `depth` 0 (or the block absent) means no
readout, and then the model is exactly what it was before readouts existed: same parameter
paths, same initial values (the head is built last, from the rngs the rest left over, so
adding a readout does not change the trunk's initialisation either). Both 0 is an OFF block
(`jaxml/core/workdir.py`), so configs may declare it and old workdirs still resume.
`depth` k >= 1 reads the activation after trunk layer k (a layer is a CNN stage, the CNN's
dense layer, a ResNet residual block, an MLP hidden layer: what each model's docstring
calls its trunk layers); `hidden` h > 0 puts one hidden layer of width h (with the model's
activation) in the readout, else it is linear. Feature maps are global-average-pooled first.

A model with a readout (any model using `Trunk` below) offers, besides the usual interface:

  model.features_at(x, depth, *, train)      activation after trunk layer `depth`, un-stopped
  model.logits_from(a, depth, *, train)      logits from activation `a` after layer `depth`
  model.readout(x, *, train, stop_gradient=True) -> readout logits [B, num_classes]
  model.logits_and_readout(x, *, train)      (logits, readout logits) from ONE trunk pass
  trunk_below(model, depth=None)             mask over the Params: the trunk layers <= depth
  only_below(tx, mask)                       tx on the masked Params, zero updates elsewhere

One pass matters beyond speed: a BatchNorm trunk run twice in train mode would update its
running statistics twice per step. `stop_gradient=False` is for SiFeR's forget step, whose
loss must reach the layers below the readout, and be applied to them alone: with
`only_below(tx, trunk_below(model))`.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from jaxml.core import checks
from jaxml.errors import ConfigError

RULES = {"model.readout.depth": checks.count(0), "model.readout.hidden": checks.count(0)}


def settings(block, trunk_depth: int) -> tuple[int, int]:
  """(depth, hidden) of a `model.readout` block, (0, 0) for None; ConfigError naming
  `model.readout.depth` and the network's depth where the readout would sit above the top."""
  block = block or {}
  checks.check_values({"model": {"readout": dict(block)}}, RULES)
  unknown = sorted(set(block) - {"depth", "hidden"})
  if unknown:
    raise ConfigError(f"model.readout has unknown keys {unknown}; it takes depth and hidden")
  depth, hidden = int(block.get("depth", 0) or 0), int(block.get("hidden", 0) or 0)
  if depth > trunk_depth:
    raise ConfigError(f"model.readout.depth={depth} is deeper than the network, whose trunk "
                      f"has {trunk_depth} layers (readout depths 1..{trunk_depth})")
  return depth, hidden  # hidden is unused at depth 0, so a sweep can switch the readout off


class Head(nnx.Module):
  """[global average pool] -> [Linear -> activation] -> Linear: the readout's classifier."""

  def __init__(self, in_features: int, hidden: int, num_classes: int, *, activation,
               rngs: nnx.Rngs):
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.hidden = nnx.Linear(in_features, hidden, rngs=rngs) if hidden else None
    self.out = nnx.Linear(hidden or in_features, num_classes, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim > 2:  # a feature map [B, H, W, C]: what a linear probe of a CNN layer sees
      x = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    if self.hidden is not None:
      x = self.activation(self.hidden(x))
    return self.out(x)


def attach(model: nnx.Module, block, num_classes: int, rngs: nnx.Rngs) -> None:
  """Gives `model` (a `Trunk`, its other layers already built) the readout its `model.readout`
  block asks for; with none, only the static `readout_depth = 0` (no parameters)."""
  depth, hidden = settings(block, model.trunk_depth)
  model.readout_depth = depth
  if depth:
    model.readout_head = Head(model.trunk_widths[depth - 1], hidden, num_classes,
                              activation=model.activation, rngs=rngs)


class Trunk:
  """Mixin for models laid out as stem -> trunk layers -> finish -> head. A model defines
  `trunk_depth`, `trunk_widths` (channels after each trunk layer), `_stem(x, train)`,
  `_layer(i, x, train)` for i in [0, trunk_depth), `_finish(x)` (to the features) and calls
  `attach` last in its __init__; the mixin gives the forward passes, all from one loop."""

  def _run(self, x: jax.Array, depth: int, train: bool, tap: int = 0):
    """(activation after layer `depth`, activation after layer `tap` or None)."""
    x, tapped = self._stem(x, train), None
    for index in range(depth):
      x = self._layer(index, x, train)
      if index + 1 == tap:
        tapped = x
    return x, tapped

  def features_at(self, x: jax.Array, depth: int, *, train: bool = False) -> jax.Array:
    """The trunk's activation after layer `depth` (0: the stem's output), gradient intact."""
    if not 0 <= depth <= self.trunk_depth:
      raise ValueError(f"depth {depth} outside the trunk's 0..{self.trunk_depth}")
    return self._run(x, depth, train)[0]

  def logits_from(self, activation: jax.Array, depth: int, *, train: bool = False) -> jax.Array:
    """Logits from the activation after trunk layer `depth` (as `features_at` gives it):
    layers depth+1.. to the top, `_finish` and `head`, so that
    `logits_from(features_at(x, d), d)` is `model(x)`. Its gradient with respect to the
    activation is what Grad-CAM weighs a feature map by (jaxml/evaluators/saliency.py)."""
    if not 0 <= depth <= self.trunk_depth:
      raise ValueError(f"depth {depth} outside the trunk's 0..{self.trunk_depth}")
    for index in range(depth, self.trunk_depth):
      activation = self._layer(index, activation, train)
    return self.head(self._finish(activation))

  def features(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    return self._finish(self._run(x, self.trunk_depth, train)[0])

  def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
    return self.head(self.features(x, train=train))

  def _readout_of(self, activation: jax.Array, stop_gradient: bool) -> jax.Array:
    if not self.readout_depth:
      raise ValueError("this model has no readout (model.readout.depth is 0)")
    return self.readout_head(jax.lax.stop_gradient(activation) if stop_gradient else activation)

  def readout(self, x: jax.Array, *, train: bool = False, stop_gradient: bool = True):
    """Readout logits [B, num_classes]. With `stop_gradient` (the default) their loss trains
    the readout head alone: its gradient with respect to every trunk parameter is exactly 0."""
    return self._readout_of(self.features_at(x, self.readout_depth, train=train), stop_gradient)

  def logits_and_readout(self, x: jax.Array, *, train: bool = False,
                         stop_gradient: bool = True) -> tuple[jax.Array, jax.Array]:
    """(logits, readout logits) from one pass of the trunk."""
    if not self.readout_depth:
      raise ValueError("this model has no readout (model.readout.depth is 0)")
    last, tapped = self._run(x, self.trunk_depth, train, tap=self.readout_depth)
    return self.head(self._finish(last)), self._readout_of(tapped, stop_gradient)


def _is_below(path: tuple[Any, ...], prefixes: tuple[tuple[Any, ...], ...]) -> bool:
  keys = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
  return any(keys[:len(p)] == p for p in prefixes)


def trunk_below(model: nnx.Module, depth: int | None = None):
  """A pytree of bools shaped like the model's Params (`nnx.split(model, nnx.Param, ...)[1]`,
  a TrainState's `params`): True exactly on the stem and trunk layers 1..depth (default the
  readout's depth), False on the layers above, the head and the readout head. Use it as the
  mask of `optax.masked` (or the labels of `optax.multi_transform`) for an update that may
  touch only what lies below the readout. `model` may be abstract (`nnx.eval_shape`)."""
  depth = model.readout_depth if depth is None else depth
  if not 0 < depth <= model.trunk_depth:
    raise ValueError(f"depth {depth} outside the trunk's 1..{model.trunk_depth}")
  prefixes = model._below_prefixes(depth)  # pylint: disable=protected-access
  params = nnx.split(model, nnx.Param, ...)[1]
  return jax.tree.map_with_path(lambda path, _: _is_below(path, prefixes), params)


def only_below(tx: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """`tx` on the Params where `mask` (from `trunk_below`) is True, updates of exactly zero
  elsewhere, so those Params stay bit-identical. Not `optax.masked(tx, mask)` alone: it
  passes the other gradients through unchanged, and `apply_updates` would then add them
  (the forget loss has a nonzero gradient at the readout head)."""
  labels = jax.tree.map(lambda below: "below" if below else "frozen", mask)
  return optax.multi_transform({"below": tx, "frozen": optax.set_to_zero()}, labels)
