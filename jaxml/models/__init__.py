"""Classification models, loaded by module name.

`create(model_config, ...)` imports `jaxml.models.<model_config.name>` and calls its `create`,
so adding a model is adding one file: there is no registry to keep in sync.

Every model maps float32 inputs to logits: the CNN and ResNets take NHWC images and refuse
other shapes; the MLP flattens whatever it gets, so it also takes feature vectors [B, D]
(tabular data, e.g. `adult`). They share one interface, which the algorithms rely on:

  model(x, *, train=False)          -> logits [B, num_classes]   == model.head(features(x))
  model.features(x, *, train=False) -> [B, model.feature_dim]    (what a linear probe sees)
  model.head                        -> the final nnx.Linear, so it can be zeroed or replaced

The CNN, ResNet and MLP also take an early readout (`model.readout`, jaxml/models/readout.py):
a small head on an intermediate layer whose loss cannot train the trunk; other models refuse
one.

Models hold no RNG state and no dropout, so a train step is a pure function of (params,
batch); BatchNorm running statistics (`nnx.BatchStat`) are the only non-`nnx.Param` state:

  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  # inside jit (copy=True when this runs inside jax.grad: BatchNorm mutates its statistics
  # at the grad's trace level):
  m = nnx.merge(graphdef, params, rest, copy=True)
  logits = m(x, train=True)
  _, _, new_rest = nnx.split(m, nnx.Param, ...)   # updated batch statistics
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from flax import nnx
import ml_collections

from jaxml.errors import ConfigError
from jaxml.models import readout


def _takes_one_input(module) -> bool:
  builder = getattr(module, "create", None)
  return builder is not None and "input_shape" in inspect.signature(builder).parameters


def available() -> list[str]:
  """Names of the classification models in this package (what `model_config.name` may be):
  its modules whose `create` takes an `input_shape`. Others are built by their algorithm:
  `decision_transformer` has no `create`, and `mpnn` takes graphs (several arrays, see
  jaxml/models/graphs.py), so its `create` takes feature counts instead."""
  names = (info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))
  return sorted(n for n in names if _takes_one_input(importlib.import_module(f"{__name__}.{n}")))


def create(
    model_config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs,
) -> nnx.Module:
  """Builds the model that `model_config.name` names; `input_shape` excludes the batch dim."""
  name = model_config.get("name", None)
  names = available()
  # Checked against the package listing rather than by catching ImportError, so a real import
  # error inside a model file is not misreported as an unknown name.
  if not isinstance(name, str) or name not in names:
    raise ConfigError(f"unknown model name {name!r}; available models: {', '.join(names)}")
  module = importlib.import_module(f"{__name__}.{name}")
  model = module.create(
      model_config, num_classes=num_classes, input_shape=tuple(input_shape), rngs=rngs
  )
  if (model_config.get("readout", None) or {}).get("depth", 0) and not isinstance(
      model, readout.Trunk):
    raise ConfigError(f"model.readout: the {name} model has no early readout (cnn, resnet "
                      "and mlp have)")
  return model
