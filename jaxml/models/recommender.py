"""A click-through model over hashed categorical ids: embeddings, then an MLP.

Input: int32 ids [B, F], one hashed id in [0, vocab) per feature field (the `clicklog`
source's `ids`). Each field's id picks a row of that field's embedding table; the F rows are
concatenated and fed to [Linear -> (LayerNorm) -> activation] * len(hidden) -> head.

The F tables are held as one table of F * vocab rows, field f's rows starting at f * vocab:
the same parameters as F separate tables (no row is shared between fields), but one gather
and one parameter array whatever F is.

Config fields: `vocab` (required: the source's buckets per field; ids outside [0, vocab) are
not checked inside jit, so the experiment ties it to `data.vocab`); `embed_dim` (16);
`hidden` (256, 128); `activation`, a spec of jaxml/models/activations.py (default "relu");
`layer_norm` (False): normalise each hidden layer's pre-activations, which the smooth
activations paper found needed for their reproducibility gain.
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from jaxml.errors import ConfigError
from jaxml.models import activations


class Recommender(nnx.Module):
  """Per-field embeddings, concatenated -> MLP -> head (the shared model interface)."""

  def __init__(
      self,
      num_fields: int,
      vocab: int,
      embed_dim: int,
      hidden: Sequence[int],
      num_classes: int,
      *,
      activation: activations.Activation = activations.RELU,
      layer_norm: bool = False,
      rngs: nnx.Rngs,
  ):
    self.num_fields, self.vocab = num_fields, vocab
    self.activation = activation  # static: nnx.split keeps it in the graphdef
    self.embed = nnx.Embed(num_fields * vocab, embed_dim, rngs=rngs)
    widths = [num_fields * embed_dim, *hidden]
    self.layers = nnx.List(
        [nnx.Linear(w_in, w_out, rngs=rngs) for w_in, w_out in zip(widths[:-1], widths[1:])])
    self.norms = nnx.List([nnx.LayerNorm(w, rngs=rngs) for w in hidden] if layer_norm else [])
    self.feature_dim = widths[-1]
    self.head = nnx.Linear(self.feature_dim, num_classes, rngs=rngs)

  def features(self, ids: jax.Array, *, train: bool = False) -> jax.Array:
    del train  # No layer behaves differently in training.
    if ids.ndim != 2 or ids.shape[1] != self.num_fields:
      raise ValueError(f"recommender expects ids [B, {self.num_fields}], got {ids.shape}")
    offsets = jnp.arange(self.num_fields, dtype=jnp.int32) * self.vocab
    x = self.embed(ids.astype(jnp.int32) + offsets).reshape(ids.shape[0], -1)
    for i, layer in enumerate(self.layers):
      x = layer(x)
      if self.norms:
        x = self.norms[i](x)
      x = self.activation(x)
    return x

  def __call__(self, ids: jax.Array, *, train: bool = False) -> jax.Array:
    return self.head(self.features(ids, train=train))


def create(
    model_config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    rngs: nnx.Rngs,
) -> Recommender:
  if len(input_shape) != 1 or input_shape[0] < 1:
    raise ConfigError(f"recommender takes ids of shape [F] per example, got {input_shape}")
  vocab = model_config.get("vocab", 0)
  embed_dim = model_config.get("embed_dim", 16)
  hidden = tuple(model_config.get("hidden", (256, 128)))
  for key, value in (("vocab", vocab), ("embed_dim", embed_dim), *(("hidden", w) for w in hidden)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"recommender model.{key} must be positive integers, got {value!r}")
  layer_norm = model_config.get("layer_norm", False)
  if not isinstance(layer_norm, bool):
    raise ConfigError(f"recommender model.layer_norm must be True or False, got {layer_norm!r}")
  return Recommender(input_shape[0], vocab, embed_dim, hidden, num_classes,
                     activation=activations.from_config(model_config), layer_norm=layer_norm,
                     rngs=rngs)
