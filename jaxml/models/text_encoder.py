"""Text conditioning for the video planner: a small transformer trained with it, or frozen
precomputed (e.g. T5) embeddings. Both are called the same way:

  encoder(tokens [B, L] int32, drop [B] bool | None)
      -> (token_embeddings [B, L', D], pooled [B, D], mask [B, L'] bool)

Token id 0 is padding. `mask` marks the positions a cross-attention may read; pad positions
of `token_embeddings` are zero and `pooled` is the mean over unmasked positions (zero for a
row with no tokens, never NaN). Where `drop` is True the row is replaced by the learned null
embedding (tokens = null, pooled = mean of null, mask all True), whatever the tokens were:
that is the unconditional model of classifier-free guidance.

Frozen T5 embeddings. T5 cannot be downloaded here, so the planner reads a table that you
compute once from local weights (`transformers` from a local directory; recent versions have
no Flax models, in which case use `T5EncoderModel` with `return_tensors="pt"`):

  import numpy as np
  from transformers import AutoTokenizer, FlaxT5EncoderModel
  weights = "/path/to/t5-small"                    # a local directory: no network needed
  tokenizer = AutoTokenizer.from_pretrained(weights)
  t5 = FlaxT5EncoderModel.from_pretrained(weights)
  missions = sorted(set(all_mission_strings))      # every mission the planner will see
  batch = tokenizer(missions, padding="max_length", max_length=16, truncation=True,
                    return_tensors="np")
  hidden = t5(input_ids=batch["input_ids"],
              attention_mask=batch["attention_mask"]).last_hidden_state
  np.savez("t5_embeddings.npz", missions=np.array(missions),           # str [N]
           embeddings=np.asarray(hidden, np.float32),                  # [N, L, D]
           mask=np.asarray(batch["attention_mask"], bool))             # [N, L]

Then `load_t5_embeddings("t5_embeddings.npz")` and `FrozenTextEmbeddings(table["embeddings"],
table["mask"], mission_tokens, rngs=...)`, where `mission_tokens[i]` are the planner's own
token ids of `table["missions"][i]`: at run time a row is found by matching the token ids
exactly, so the planner's data never has to carry mission strings or row ids.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxml.errors import ConfigError
from jaxml.models.decision_transformer import Block

PAD = 0


class Frozen(nnx.Variable):
  """A constant carried in the model state but not an `nnx.Param`, so an optimizer built
  with `wrt=nnx.Param` (or a split on `nnx.Param`) never trains it."""


def _pool(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the unmasked positions; a row with none pools to zero, not 0/0."""
  weights = mask.astype(x.dtype)[..., None]
  return jnp.sum(x * weights, axis=-2) / jnp.maximum(jnp.sum(weights, axis=-2), 1.0)


def _apply_drop(null: jax.Array, tokens: jax.Array, pooled: jax.Array, mask: jax.Array,
                drop: jax.Array | None):
  if drop is None:
    return tokens, pooled, mask
  drop = jnp.asarray(drop, bool)
  tokens = jnp.where(drop[:, None, None], null[None], tokens)
  pooled = jnp.where(drop[:, None], jnp.mean(null, axis=0)[None], pooled)
  return tokens, pooled, mask | drop[:, None]


class TextEncoder(nnx.Module):
  """Token + learned position embedding -> `depth` pre-LN transformer blocks (pad keys
  masked) -> LayerNorm. Bidirectional: missions are read whole, not generated."""

  def __init__(self, vocab_size: int, max_len: int, width: int, depth: int, num_heads: int,
               *, mlp_ratio: int = 4, rngs: nnx.Rngs):
    if width % num_heads:
      raise ConfigError(f"text width {width} is not divisible by {num_heads} heads")
    self.max_len = max_len
    self.width = width
    init = nnx.initializers.normal(0.02)
    self.token_embed = nnx.Embed(vocab_size, width, embedding_init=init, rngs=rngs)
    self.position = nnx.Param(init(rngs.params(), (max_len, width)))
    self.blocks = nnx.List([Block(width, num_heads, mlp_ratio, rngs=rngs)
                            for _ in range(depth)])
    self.norm = nnx.LayerNorm(width, rngs=rngs)
    self.null = nnx.Param(init(rngs.params(), (max_len, width)))

  def __call__(self, tokens: jax.Array, drop: jax.Array | None = None):
    length = tokens.shape[1]
    if length > self.max_len:
      raise ValueError(f"{length} text tokens exceed the encoder's max_len of {self.max_len}")
    mask = tokens != PAD
    x = self.token_embed(tokens) + self.position[...][:length]
    # Only keys are masked: pad queries still attend (and are zeroed below), so a row of
    # padding gets finite values instead of a softmax over nothing.
    attention_mask = mask[:, None, None, :]
    for block in self.blocks:
      x = block(x, attention_mask)
    x = self.norm(x) * mask[..., None]
    return _apply_drop(self.null[...][:length], x, _pool(x, mask), mask, drop)


class FrozenTextEmbeddings(nnx.Module):
  """Precomputed embeddings [N, L, D] (e.g. from T5), looked up by the planner's token ids.

  Only the null embedding (for dropped text) is trained. A row whose tokens match no mission
  gets zero embeddings and an all-False mask; check the data up front with `unknown`.
  """

  def __init__(self, embeddings, mask, mission_tokens, *, rngs: nnx.Rngs):
    embeddings = np.asarray(embeddings, np.float32)
    mask = np.asarray(mask, bool)
    mission_tokens = np.asarray(mission_tokens, np.int32)
    if embeddings.ndim != 3 or mask.shape != embeddings.shape[:2]:
      raise ConfigError(f"frozen text embeddings need [N, L, D] and mask [N, L], got "
                        f"{embeddings.shape} and {mask.shape}")
    if mission_tokens.ndim != 2 or len(mission_tokens) != len(embeddings):
      raise ConfigError(f"need one token row per embedding row: {mission_tokens.shape} tokens "
                        f"for {len(embeddings)} embeddings")
    if len(np.unique(mission_tokens, axis=0)) != len(mission_tokens):
      raise ConfigError("two missions have the same token ids, so their rows are ambiguous")
    self.embeddings = Frozen(jnp.asarray(embeddings))
    self.mask = Frozen(jnp.asarray(mask))
    self.mission_tokens = Frozen(jnp.asarray(mission_tokens))
    length, width = embeddings.shape[1:]
    self.null = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (length, width)))

  def rows(self, tokens: jax.Array) -> jax.Array:
    """[B] row of each example's mission in the table, -1 where none matches."""
    table = self.mission_tokens[...]
    width = max(tokens.shape[1], table.shape[1])  # trailing padding does not change a mission
    tokens = jnp.pad(tokens, ((0, 0), (0, width - tokens.shape[1])))
    table = jnp.pad(table, ((0, 0), (0, width - table.shape[1])))
    match = jnp.all(tokens[:, None, :] == table[None], axis=-1)  # [B, N]
    return jnp.where(jnp.any(match, axis=1), jnp.argmax(match, axis=1), -1)

  def unknown(self, tokens) -> np.ndarray:
    """Host-side check: indices of the examples whose mission is not in the table."""
    return np.flatnonzero(np.asarray(self.rows(jnp.asarray(tokens, jnp.int32))) < 0)

  def __call__(self, tokens: jax.Array, drop: jax.Array | None = None, *,
               rows: jax.Array | None = None):
    if rows is None:
      rows = self.rows(tokens)
    known = rows >= 0
    safe = jnp.maximum(rows, 0)
    # stop_gradient: a Frozen leaf may still sit inside a differentiated state.
    x = jax.lax.stop_gradient(self.embeddings[...])[safe] * known[:, None, None]
    mask = self.mask[...][safe] & known[:, None]
    x = x * mask[..., None]
    return _apply_drop(self.null[...], x, _pool(x, mask), mask, drop)


def load_t5_embeddings(path: str) -> dict[str, np.ndarray]:
  """{"missions": str [N], "embeddings": float32 [N, L, D], "mask": bool [N, L]} from the
  .npz written by the snippet in this module's docstring."""
  if not os.path.isfile(path):
    raise ConfigError(f"text embeddings file {path!r} does not exist; write it with the "
                      "snippet in jaxml/models/text_encoder.py")
  try:
    with np.load(path, allow_pickle=False) as data:
      table = {key: data[key] for key in data.files}
  except (OSError, ValueError) as e:
    raise ConfigError(f"text embeddings file {path!r} is not a readable .npz: {e}") from e
  missing = {"missions", "embeddings", "mask"} - set(table)
  if missing:
    raise ConfigError(f"text embeddings file {path!r} lacks {sorted(missing)}")
  missions, embeddings, mask = table["missions"], table["embeddings"], table["mask"]
  if missions.ndim != 1 or missions.dtype.kind != "U":
    raise ConfigError(f"'missions' in {path!r} must be a 1-d array of strings")
  if embeddings.ndim != 3 or embeddings.shape[0] != len(missions):
    raise ConfigError(f"'embeddings' in {path!r} must be [N={len(missions)}, L, D], got "
                      f"{embeddings.shape}")
  if mask.shape != embeddings.shape[:2]:
    raise ConfigError(f"'mask' in {path!r} must be {embeddings.shape[:2]}, got {mask.shape}")
  if len(set(missions.tolist())) != len(missions):
    raise ConfigError(f"'missions' in {path!r} has duplicates")
  if not np.all(np.isfinite(embeddings)):
    raise ConfigError(f"'embeddings' in {path!r} has NaN or Inf")
  return {"missions": missions, "embeddings": embeddings.astype(np.float32),
          "mask": mask.astype(bool)}
