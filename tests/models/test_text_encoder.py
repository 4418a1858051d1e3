"""Text encoder: shapes, padding invariance, exact null embedding on drop, frozen table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxml.errors import ConfigError
from jaxml.models import text_encoder as te

TOKENS = jnp.array([[5, 3, 7, 0, 0, 0],
                    [2, 9, 4, 8, 6, 0],
                    [5, 3, 0, 0, 0, 0],
                    [0, 0, 0, 0, 0, 0]], jnp.int32)


def _encoder(max_len=8):
  return te.TextEncoder(vocab_size=12, max_len=max_len, width=16, depth=2, num_heads=2,
                        rngs=nnx.Rngs(0))


def test_shapes_and_mask():
  tokens, pooled, mask = _encoder()(TOKENS)
  assert tokens.shape == (4, 6, 16) and pooled.shape == (4, 16) and mask.shape == (4, 6)
  np.testing.assert_array_equal(mask, TOKENS != 0)
  np.testing.assert_array_equal(tokens[0, 3:], 0.0)  # pad positions are zeroed


def test_appending_padding_does_not_change_the_output():
  encoder = _encoder()
  short_tokens, short_pooled, _ = encoder(TOKENS)
  long_tokens, long_pooled, _ = encoder(jnp.pad(TOKENS, ((0, 0), (0, 2))))
  np.testing.assert_allclose(long_pooled, short_pooled, atol=1e-6)
  np.testing.assert_allclose(long_tokens[:, :6], short_tokens, atol=1e-6)


def test_drop_gives_exactly_the_null_embedding_whatever_the_tokens():
  encoder = _encoder()
  drop = jnp.array([True, False, True, True])
  tokens, pooled, mask = encoder(TOKENS, drop)
  null = encoder.null[...][:6]
  for row in (0, 2, 3):
    np.testing.assert_array_equal(tokens[row], null)
    np.testing.assert_array_equal(pooled[row], jnp.mean(null, axis=0))
    assert bool(mask[row].all())
  kept_tokens, kept_pooled, _ = encoder(TOKENS)
  np.testing.assert_array_equal(tokens[1], kept_tokens[1])
  np.testing.assert_array_equal(pooled[1], kept_pooled[1])
  # Dropped rows do not depend on the tokens at all.
  other = encoder(jnp.flip(TOKENS, axis=0) % 11 + 1, drop)
  np.testing.assert_array_equal(other[0][0], tokens[0])
  np.testing.assert_array_equal(other[1][2], pooled[2])


def test_different_missions_differ_and_all_pad_row_is_finite():
  tokens, pooled, _ = _encoder()(TOKENS)
  assert np.all(np.isfinite(tokens)) and np.all(np.isfinite(pooled))
  np.testing.assert_array_equal(pooled[3], 0.0)  # nothing to pool
  for i in range(3):
    for j in range(i + 1, 3):
      assert float(jnp.abs(pooled[i] - pooled[j]).max()) > 1e-3


def test_gradient_reaches_every_parameter():
  encoder = _encoder()
  graphdef, params, rest = nnx.split(encoder, nnx.Param, ...)
  drop = jnp.array([False, False, True, False])

  def loss(params):
    model = nnx.merge(graphdef, params, rest)
    tokens, pooled, _ = model(TOKENS, drop)
    return jnp.sum(pooled ** 2) + jnp.sum(tokens ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  norms = {jax.tree_util.keystr(path): float(jnp.linalg.norm(g))
           for path, g in jax.tree_util.tree_leaves_with_path(grads)}
  dead = [name for name, norm in norms.items() if not norm > 0]
  assert not dead, dead


def test_too_long_text_is_rejected():
  with pytest.raises(ValueError):
    _encoder(max_len=4)(TOKENS)


def _fake_table(tmp_path, name="t5_embeddings.npz"):
  rng = np.random.default_rng(0)
  missions = np.array(["go to the red ball", "open the door", "pick up a key"])
  embeddings = rng.normal(size=(3, 5, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  path = str(tmp_path / name)
  np.savez(path, missions=missions, embeddings=embeddings, mask=mask)
  return path, embeddings, mask


def test_frozen_embeddings_look_up_rows_by_token_ids(tmp_path):
  path, embeddings, mask = _fake_table(tmp_path)
  table = te.load_t5_embeddings(path)
  assert list(table["missions"]) == ["go to the red ball", "open the door", "pick up a key"]
  mission_tokens = np.array([[3, 4, 5, 6, 7], [8, 9, 0, 0, 0], [10, 11, 2, 0, 0]])
  frozen = te.FrozenTextEmbeddings(table["embeddings"], table["mask"], mission_tokens,
                                   rngs=nnx.Rngs(0))
  # Batch tokens are padded to a different length than the table's token rows.
  batch = jnp.array([[10, 11, 2, 0, 0, 0], [3, 4, 5, 6, 7, 0], [8, 9, 0, 0, 0, 0],
                     [8, 8, 0, 0, 0, 0]])
  np.testing.assert_array_equal(frozen.rows(batch), [2, 0, 1, -1])
  np.testing.assert_array_equal(frozen.unknown(batch), [3])
  tokens, pooled, got_mask = frozen(batch)
  for b, row in enumerate([2, 0, 1]):
    np.testing.assert_allclose(tokens[b], embeddings[row] * mask[row][:, None])
    np.testing.assert_allclose(pooled[b], embeddings[row][mask[row]].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(got_mask[b], mask[row])
  assert not bool(got_mask[3].any()) and np.all(np.asarray(tokens[3]) == 0)
  # Explicit rows skip the token lookup; drop still gives the null embedding.
  tokens, pooled, got_mask = frozen(batch, jnp.array([False, True, False, False]),
                                    rows=jnp.array([1, 1, 1, 1]))
  np.testing.assert_allclose(tokens[0], embeddings[1] * mask[1][:, None])
  np.testing.assert_array_equal(tokens[1], frozen.null[...])
  assert bool(got_mask[1].all())


def test_frozen_table_is_not_trained(tmp_path):
  path, *_ = _fake_table(tmp_path)
  table = te.load_t5_embeddings(path)
  frozen = te.FrozenTextEmbeddings(table["embeddings"], table["mask"],
                                   np.arange(15).reshape(3, 5) + 1, rngs=nnx.Rngs(0))
  assert not isinstance(frozen.embeddings, nnx.Param)
  params = nnx.state(frozen, nnx.Param)
  assert set(params.keys()) == {"null"}  # the table is carried, not optimised
  graphdef, params, rest = nnx.split(frozen, nnx.Param, ...)

  def loss(params, rest):
    return jnp.sum(nnx.merge(graphdef, params, rest)(jnp.array([[1, 2, 3, 4, 5]]))[1])

  table_grad = jax.grad(loss, argnums=1, allow_int=True)(params, rest)["embeddings"]
  np.testing.assert_array_equal(table_grad[...], 0.0)


def test_load_t5_embeddings_errors(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    te.load_t5_embeddings(str(tmp_path / "missing.npz"))
  (tmp_path / "junk.npz").write_text("not an npz")
  with pytest.raises(ConfigError, match="readable"):
    te.load_t5_embeddings(str(tmp_path / "junk.npz"))
  np.savez(tmp_path / "partial.npz", missions=np.array(["a"]))
  with pytest.raises(ConfigError, match="lacks"):
    te.load_t5_embeddings(str(tmp_path / "partial.npz"))
  np.savez(tmp_path / "shape.npz", missions=np.array(["a", "b"]),
           embeddings=np.zeros((3, 2, 4)), mask=np.ones((3, 2), bool))
  with pytest.raises(ConfigError, match="embeddings"):
    te.load_t5_embeddings(str(tmp_path / "shape.npz"))
