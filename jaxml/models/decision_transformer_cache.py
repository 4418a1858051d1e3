"""Cached attention for Decision Transformer play: one pass over the window per move.

At each move a player needs two predictions on the same window (`decision_transformer.py`):
the return logits of the current step s (read at the last patch of frame s), then, once a
return bin is chosen, the action logits (read at the return token R_s, which depends on that
choice). The model's full forward would run the window twice. Here:

  `prefill`  runs the window once, up to the last patch of its last step (the tokens after it,
             R/a/r of the last step, are never read by the two queries below), keeps every
             layer's keys and values, and computes the last layer only at the query that reads
             the return (the other rows of the last layer feed nothing).
  `extend`   computes only the new R_s token through every layer against those keys and
             values (its own key and value written at its index), and returns the action logits.

Why not cache across moves: step positions are relative to the window (`step_position`), so
once the window is full and slides every token's embedding changes, and with it every key and
value. Tokens before R_s do not attend to it (causal mask), so their keys and values are the
same in both of the full model's passes: the result equals the full model's up to float
rounding (different reduction shapes), which `tests/models/test_decision_transformer_cache.py`
checks, and the player's actions are the same under the same keys (`tests/algos/test_mgdt.py`).

Same parameters as `DecisionTransformer.__call__`: the blocks' own norms, projections and MLPs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxml.models import decision_transformer as dt


def _check(model: dt.DecisionTransformer) -> None:
  for block in model.blocks:
    attention = block.attention
    if attention.dropout_rate > 0 or attention.normalize_qk:
      raise ValueError("cached play supports attention without dropout or query/key norms")


def _attend(block: dt.Block, x, query, key, value, mask):
  """`Block.__call__` given the projections: residual attention (the module's own attention
  function, dtype and precision), then the residual MLP."""
  attention = block.attention
  out = attention.attention_fn(query, key, value, mask=mask, dtype=attention.dtype,
                               precision=attention.precision)
  return block.residual_mlp(x + attention.out(out))


def _rows(x, index):
  """x [B, T, ...], index [B] -> [B, 1, ...]: each example's row `index`."""
  return jnp.take_along_axis(x, index.reshape((-1, 1) + (1,) * (x.ndim - 2)), axis=1)


def prefill(model: dt.DecisionTransformer, frames, returns, actions, rewards, slot):
  """Windows of L steps (frames [B, L, H, W, C], return bins, actions, reward classes [B, L]),
  `slot` [B] the step being played in each (its frame written, its return not chosen yet).
  Returns (return logits [B, bins] of step `slot`, the cache `extend` reads)."""
  _check(model)
  batch, steps = returns.shape
  per_step = model.patches + 3
  total = steps * per_step
  length = total - 3  # through the last step's last patch
  x = model.tokens(frames, returns, actions, rewards)[:, :length]
  mask = jnp.asarray(dt.attention_mask(steps, model.patches, model.single_return_token))
  last_patch = slot * per_step + model.patches - 1
  keys, values = [], []
  for i, block in enumerate(model.blocks):
    attention, h = block.attention, block.norm1(x)
    key, value = attention.key(h), attention.value(h)
    if i + 1 < len(model.blocks):
      x = _attend(block, x, attention.query(h), key, value, mask[None, None, :length, :length])
    else:  # the last layer only where the return is read
      row_mask = _rows(mask[None, :, :length], last_patch)[:, None]  # [B, 1, 1, length]
      x = _attend(block, _rows(x, last_patch), attention.query(_rows(h, last_patch)), key, value,
                  row_mask)
    pad = ((0, 0), (0, total - length), (0, 0), (0, 0))  # the slots `extend` writes R_s into
    keys.append(jnp.pad(key, pad))
    values.append(jnp.pad(value, pad))
  cache = {"key": keys, "value": values, "slot": slot}
  return model.return_head(model.norm(x))[:, 0], cache


def extend(model: dt.DecisionTransformer, cache, return_bin):
  """Action logits [B, actions] of the cached windows' step `slot` given its return bin [B]:
  the full model's `__call__(...)["action"][:, slot]` on the window with that bin written."""
  slot = cache["slot"]
  steps = cache["key"][0].shape[1] // (model.patches + 3)
  x = model.return_embed(return_bin)
  if model.single_return_token:  # as `tokens`: later return slots carry their position only
    x = x * (slot == 0)[:, None]
  x = (x + model.step_position(slot))[:, None]  # [B, 1, width]
  index = slot * (model.patches + 3) + model.patches
  mask = jnp.asarray(dt.attention_mask(steps, model.patches, model.single_return_token))
  row_mask = mask[index][:, None, None]  # [B, 1, 1, T]
  here = jax.nn.one_hot(index, mask.shape[0], dtype=bool)[:, :, None, None]  # [B, T, 1, 1]
  for block, keys, values in zip(model.blocks, cache["key"], cache["value"]):
    attention, h = block.attention, block.norm1(x)
    keys = jnp.where(here, attention.key(h), keys)
    values = jnp.where(here, attention.value(h), values)
    x = _attend(block, x, attention.query(h), keys, values, row_mask)
  return model.action_head(model.norm(x))[:, 0]
