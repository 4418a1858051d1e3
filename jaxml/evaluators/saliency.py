"""Grad-CAM saliency maps (Selvaraju et al., ICCV 2017): where in an image a network finds
its evidence for a class; e.g. on the digit's stroke, or on a colour or patch shortcut.

For the feature map A = model.features_at(x, depth) [B, h, w, C] of any `Trunk` model
(jaxml/models/readout.py) and the class score y_b = model.logits_from(A, depth)[b, class_b]
(a logit, before the softmax, as in the paper; the class defaults to the predicted one):

    alpha_bc = mean_ij dy_b / dA_bijc          how much channel c raises the score
    map_b    = relu(sum_c alpha_bc A_bijc)     the positive evidence, at the layer's h x w

then resized bilinearly to the image's H x W and divided by its maximum (0 where that is 0),
so every map lies in [0, 1] with max exactly 1. Normalised after the resize rather than
before: bilinear interpolation lowers a peak that falls between output pixels, and maps
drawn side by side should share one colour scale. Everything runs in eval mode (BatchNorm on
its running statistics), where examples are independent, so one backward pass of the summed
scores gives every example its own gradient.

Where the rest of the network after the tapped layer is a global average pool and a linear
head (a ResNet's last block), Grad-CAM is CAM (Zhou et al., CVPR 2016): alpha_bc =
W[c, class_b] / (h w), so map_b is relu(sum_c W[c, class_b] A_bijc) normalised.

  grad_cam(model, images, depth, classes=None)   maps [B, H, W]; pure and jittable with
                                                 depth static (nnx modules are pytrees):
                                                 jax.jit(grad_cam, static_argnums=2)
  gradient_weights(model, activation, depth, classes=None)   (alpha [B, C], classes [B])
  figure(path, images, maps_by_method, titles=None)          a PNG grid, host only
  for_runs(runs, split, indices, depth, path)   the maps of trained runs (ERM vs SiFeR, …)
                                                 for the same examples, drawn as one figure
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.errors import ConfigError

CELL_INCHES = 1.5  # one example of one method in the figure
DPI = 100          # so a cell is 150 x 150 pixels
OVERLAY_ALPHA = 0.5


def gradient_weights(model, activation: jax.Array, depth: int, classes=None):
  """(alpha [B, C], classes [B]): alpha_bc = mean over (i, j) of d logit[b, class_b] /
  d activation[b, i, j, c], the activation being `model.features_at(x, depth)`; `classes`
  default to the predicted ones (the argmax of the logits from `activation`)."""
  logits, pullback = jax.vjp(lambda a: model.logits_from(a, depth, train=False), activation)
  if classes is None:
    classes = jnp.argmax(logits, axis=-1)
  classes = jnp.asarray(classes, jnp.int32)
  if classes.shape != logits.shape[:1]:
    raise ValueError(f"grad_cam: classes shaped {classes.shape}, expected one per image "
                     f"({logits.shape[0]},)")
  # One cotangent row per example: in eval mode the batch's scores are independent, so the
  # pullback of their one-hot selection is each example's own gradient.
  (grads,) = pullback(jax.nn.one_hot(classes, logits.shape[-1], dtype=logits.dtype))
  return jnp.mean(grads, axis=(1, 2)), classes


def grad_cam(model, images: jax.Array, depth: int, classes=None, *,
             resize: bool = True) -> jax.Array:
  """Grad-CAM maps [B, H, W] in [0, 1] of `images` [B, H, W, C] at trunk layer `depth` (a
  layer with a feature map: a CNN stage, a ResNet block, not the CNN's dense layer nor any
  MLP layer: those raise ConfigError), for `classes` [B] (default: the predicted classes).
  `resize=False` leaves them at the layer's h x w (normalised there)."""
  activation = model.features_at(images, depth, train=False)
  if activation.ndim != 4:
    raise ConfigError(_no_feature_map(model, images, depth, activation.shape))
  weights, _ = gradient_weights(model, activation, depth, classes)
  maps = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", activation, weights))
  if resize:
    maps = jax.image.resize(maps, (maps.shape[0], *images.shape[1:3]), "bilinear")
  return _normalise(maps)


def _normalise(maps: jax.Array) -> jax.Array:
  peak = jnp.max(maps, axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, maps / jnp.where(peak > 0, peak, 1.0), 0.0)


def _no_feature_map(model, images, depth: int, shape) -> str:
  """The error for a layer without spatial dims, naming the depths that have them."""
  with_maps = [d for d in range(model.trunk_depth + 1)
               if len(jax.eval_shape(lambda d=d: model.features_at(images, d)).shape) == 4]
  choices = (f"this {type(model).__name__}'s layers with one are depths {with_maps}"
             if with_maps else f"this {type(model).__name__} has none")
  return (f"grad_cam: depth {depth} has no spatial feature map (its activation is shaped "
          f"{tuple(shape[1:])} per example, not [h, w, channels]); {choices}")


def figure(path: str, images, maps_by_method: Mapping[str, np.ndarray],
           titles: Sequence[str] | None = None, *, alpha: float = OVERLAY_ALPHA) -> str:
  """A PNG grid: one column per example, the images in the first row, then one row per
  method with its map (in [0, 1], jet) over the image. `images` [B, H, W, 3] in [0, 1] or
  grey ([B, H, W] or [B, H, W, 1]); each map [B, H, W]. Each cell is CELL_INCHES * DPI
  pixels square. Returns `path`."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure  # slow imports, and only drawing needs them
  from jaxml.core.plots import save_figure  # (its metrics module imports tensorboardX)

  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
    raise ValueError(f"figure: images shaped {images.shape}; expected [B, H, W, 3] or grey")
  count, size = len(images), images.shape[1:3]
  for name, maps in maps_by_method.items():
    if np.shape(maps) != (count, *size):
      raise ValueError(f"figure: {name!r} maps are shaped {np.shape(maps)}, the images "
                       f"{(count, *size)}")
  if titles is not None and len(titles) != count:
    raise ValueError(f"figure: {len(titles)} titles for {count} images")

  rows = [("image", None), *maps_by_method.items()]
  fig = Figure(figsize=(CELL_INCHES * count, CELL_INCHES * len(rows)))
  axes = fig.subplots(len(rows), count, squeeze=False)
  grey = dict(cmap="gray", vmin=0.0, vmax=1.0) if images.ndim == 3 else {}
  for row, (name, maps) in enumerate(rows):
    for col in range(count):
      ax = axes[row, col]
      ax.imshow(images[col], interpolation="nearest", **grey)
      if maps is not None:
        ax.imshow(np.asarray(maps[col]), cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha,
                  interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if col == 0:
        ax.set_ylabel(name, fontsize=8)
      if row == 0 and titles is not None:
        ax.set_title(titles[col], fontsize=7)
  fig.subplots_adjust(left=0.08, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.05)
  return save_figure(fig, path, dpi=DPI)


_jit_grad_cam = jax.jit(grad_cam, static_argnums=2)


def for_runs(runs: Mapping[str, object], split, indices, depth: int, path: str, *,
             class_field: str | None = None) -> str:
  """Grad-CAM at trunk layer `depth` of each run's model ({name: `jaxml.trained.TrainedRun`},
  e.g. ERM and SiFeR on the same data) for the rows `indices` of `split`, drawn by `figure`
  with one row per run. The maps explain each model's own prediction, or the class in the
  split's field `class_field` (e.g. "label") when given. Returns `path`."""
  if not runs:
    raise ValueError("for_runs: no runs given")
  examples = split.read(np.asarray(indices))
  maps_by_method, images = {}, None
  for name, run in runs.items():
    field = run.dataset.task.inputs[0]
    if field not in examples:
      raise ConfigError(f"for_runs: run {name!r} reads the field {field!r}, which the split "
                        f"lacks (it has {sorted(examples)})")
    images = examples[field] if images is None else images
    classes = None if class_field is None else examples[class_field]
    mesh = getattr(run, "mesh", None)  # the run's state lives on its mesh
    with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
      maps = _jit_grad_cam(run.state.model(), jnp.asarray(examples[field]), depth, classes)
    maps_by_method[name] = np.asarray(maps)
  target = next(iter(runs.values())).dataset.task.target
  titles = [f"#{int(i)}" + (f" {target}={int(examples[target][k])}" if target in examples
                            else "") for k, i in enumerate(np.asarray(indices))]
  return figure(path, images, maps_by_method, titles)
