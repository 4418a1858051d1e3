"""The UIS-RNN speaker model: running means against a NumPy loop, the `step` a decoder uses,
padding, uisrnn's CoreRNN + cumsum with the same weights, and the turn prior's estimates
and log-probabilities against their formulas written out by hand."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.errors import ConfigError
from jaxml.models import uis_rnn

D, H = 3, 5


def build(seed=0, hidden=H):
  """A small model with random, not zero, biases and initial state (zeros would hide a
  mistake that drops them)."""
  model = uis_rnn.UISRNN(D, hidden=hidden, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed)
  for _, variable in nnx.iter_graph(model):
    if isinstance(variable, nnx.Param) and variable[...].ndim == 1:
      variable[...] = jnp.asarray(rng.normal(0, 0.5, variable[...].shape), jnp.float32)
  model.sigma2[...] = jnp.asarray([0.1, 0.2, 0.3])
  return model


def weights(model):
  """The model's arrays as NumPy, named for the reference below."""
  rnn = model.rnn
  take = lambda v: np.asarray(v[...], np.float64)
  return {"wi": take(rnn.gru.input.kernel), "bi": take(rnn.gru.input.bias),
          "wh": take(rnn.gru.recurrent.kernel), "bh": take(rnn.gru.recurrent.bias),
          "w1": take(rnn.mean_hidden.kernel), "b1": take(rnn.mean_hidden.bias),
          "w2": take(rnn.mean_out.kernel), "b2": take(rnn.mean_out.bias),
          "h0": take(model.initial_hidden)}


def reference_means(w, sequence):
  """Looped NumPy: torch's GRU equations, inputs [0, x1, ..., x_{L-1}], running means."""
  sigmoid = lambda a: 1 / (1 + np.exp(-a))
  hidden, outputs, means = w["h0"], [], []
  inputs = [np.zeros(D)] + list(sequence[:-1])
  for x in inputs:
    xr, xz, xn = np.split(x @ w["wi"] + w["bi"], 3)
    hr, hz, hn = np.split(hidden @ w["wh"] + w["bh"], 3)
    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
    hidden = (1 - z) * np.tanh(xn + r * hn) + z * hidden
    outputs.append(np.maximum(hidden @ w["w1"] + w["b1"], 0) @ w["w2"] + w["b2"])
    means.append(np.mean(outputs, axis=0))
  return np.array(means)


def padded(sequences, length):
  batch = np.zeros((len(sequences), length, D), np.float32)
  mask = np.zeros((len(sequences), length), np.float32)
  for i, s in enumerate(sequences):
    batch[i, :len(s)], mask[i, :len(s)] = s, 1
  return batch, mask


def test_speaker_means_equal_a_numpy_loop_and_ignore_padding():
  model = build()
  rng = np.random.default_rng(1)
  sequences = [rng.normal(size=(n, D)) for n in (4, 1, 6)]
  batch, mask = padded(sequences, 6)
  means = np.asarray(jax.jit(lambda m, b, k: m.speaker_means(b, k))(model, batch, mask))
  for i, s in enumerate(sequences):
    np.testing.assert_allclose(means[i, :len(s)], reference_means(weights(model), s),
                               rtol=1e-5, atol=1e-6)
    assert np.all(means[i, len(s):] == 0)
  # Garbage in the padding, and more of it, change no real row.
  noisy = np.where(mask[..., None] > 0, batch, 7.0).astype(np.float32)
  longer, longer_mask = padded(sequences, 9)
  longer[longer_mask == 0] = -3.0
  np.testing.assert_allclose(model.speaker_means(noisy, mask), means, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(model.speaker_means(longer, longer_mask)[:, :6], means,
                             rtol=1e-6, atol=1e-7)


def test_step_gives_the_decoder_the_same_predictions():
  """A decoder's bookkeeping per speaker (hidden, sum of outputs, count), from
  `initial_hidden` and the zero vector, predicts what `speaker_means` does."""
  model = build()
  x = np.random.default_rng(2).normal(size=(5, D)).astype(np.float32)
  means = model.speaker_means(x[None], np.ones((1, 5), np.float32))[0]
  hidden, total = model.initial_hidden[...], 0.0
  observations = [np.zeros(D, np.float32), *x]
  for n in range(5):
    hidden, out = model.step(hidden, observations[n])
    total = total + out
    assert hidden.shape == (H,) and out.shape == (D,)
    np.testing.assert_allclose(total / (n + 1), means[n], rtol=1e-5, atol=1e-6)


def test_equals_uisrnn_core_rnn_and_cumsum_with_the_same_weights():
  torch = pytest.importorskip("torch")
  uisrnn_lib = pytest.importorskip("uisrnn.uisrnn")
  model = build(hidden=4)
  w = weights(model)
  core = uisrnn_lib.CoreRNN(D, 4, 1, D)
  tensor = lambda a: torch.tensor(np.asarray(a).T.copy(), dtype=torch.float32)
  with torch.no_grad():
    core.gru.weight_ih_l0.copy_(tensor(w["wi"]))
    core.gru.bias_ih_l0.copy_(tensor(w["bi"]))
    core.gru.weight_hh_l0.copy_(tensor(w["wh"]))
    core.gru.bias_hh_l0.copy_(tensor(w["bh"]))
    core.linear_mean1.weight.copy_(tensor(w["w1"]))
    core.linear_mean1.bias.copy_(tensor(w["b1"]))
    core.linear_mean2.weight.copy_(tensor(w["w2"]))
    core.linear_mean2.bias.copy_(tensor(w["b2"]))
  rng = np.random.default_rng(3)
  sequences = [rng.normal(size=(n, D)) for n in (3, 6, 2)]
  # uisrnn's packing (its utils.pack_sequence, whose negative-stride lengths today's torch
  # refuses): row 0 zeros, the sequence after it, longest first; then fit_concatenated's
  # running means.
  order = np.argsort([len(s) for s in sequences])[::-1]
  lengths = [len(sequences[i]) + 1 for i in order]
  rnn_input = np.zeros((lengths[0], 3, D), np.float32)
  for column, i in enumerate(order):
    rnn_input[1:lengths[column], column] = sequences[i]
  packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(rnn_input), lengths)
  hidden = torch.tensor(w["h0"], dtype=torch.float32).reshape(1, 1, -1).repeat(1, 3, 1)
  with torch.no_grad():
    out, _ = core(packed, hidden)
  out = torch.cumsum(out, dim=0) / torch.arange(1, out.shape[0] + 1).float()[:, None, None]
  theirs = out[:-1].numpy()  # [T, B, D] predicting rnn_input[1:]
  batch, mask = padded(sequences, 6)
  ours = np.asarray(model.speaker_means(batch, mask))
  for column, i in enumerate(order):
    n = len(sequences[i])
    np.testing.assert_allclose(ours[i, :n], theirs[:n, column], rtol=1e-5, atol=1e-6)


def test_bad_settings_are_config_errors():
  with pytest.raises(ConfigError, match="model.hidden=0"):
    uis_rnn.create({"hidden": 0}, D, nnx.Rngs(0))
  with pytest.raises(ConfigError, match="model.sigma2_init=0"):
    uis_rnn.create({"sigma2_init": 0.0}, D, nnx.Rngs(0))
  assert uis_rnn.create({}, D, nnx.Rngs(0)).hidden == 512


def test_transition_bias_is_the_smoothed_share_of_changes():
  labels = [[0, 0, 1, 1, 0], [2, 2, 2], ["a", "b"]]
  # Changes: 2 + 0 + 1 = 3 over 4 + 2 + 1 = 7 consecutive pairs; smoothing adds 1 and 2.
  bias, denominator = uis_rnn.estimate_transition_bias(labels)
  assert (bias, denominator) == pytest.approx(((3 + 1) / (7 + 2), 9))
  assert uis_rnn.estimate_transition_bias(labels, smooth=0.5)[0] == pytest.approx(3.5 / 8)
  utils = pytest.importorskip("uisrnn.utils")
  assert utils.estimate_transition_bias(labels) == pytest.approx((bias, denominator))


def test_crp_likelihood_by_hand_and_its_maximum():
  labels = [list("aabbbaa"), list("xxxyyyxxxzz")]
  # Turns [0, 1, 0]: the first change must open a new speaker (alpha / alpha); returning to
  # 0 has N_0 = 1 against D = 1 + alpha. Turns [0, 1, 0, 2]: the same, then a new speaker
  # with others' turns N_0 = 1 (the current speaker 0's own turns excluded):
  # log L = log alpha - 3 log(1 + alpha), maximal at alpha = 1/2.
  for alpha in (0.1, 0.5, 2.0):
    expected = np.log(alpha) - 3 * np.log(1 + alpha)
    assert uis_rnn.crp_log_likelihood(labels, alpha) == pytest.approx(expected)
  assert uis_rnn.estimate_crp_alpha(labels) == pytest.approx(0.5, rel=0.01)
  # A speaker with two earlier turns: N_k = 2 counts.
  two = [list("abab")]  # turns 0 1 0 1: new (1), back to 0: 1/(1+a), back to 1: 1/(1+a)
  assert uis_rnn.crp_log_likelihood(two, 1.0) == pytest.approx(2 * np.log(1 / 2))
  # Turns 0 1 2 0 1: c new with N_a = 1 beside the current b: a/(1+a); back to a and then
  # to b, with 2 turns of others each time: 1/(2+a) twice.
  three = [list("abcab")]
  assert uis_rnn.crp_log_likelihood(three, 1.0) == pytest.approx(np.log(1 / 2) + 2 * np.log(1 / 3))


def test_crp_likelihood_equals_uisrnn_contrib():
  contrib = pytest.importorskip("uisrnn.contrib.range_search_crp_alpha")
  rng = np.random.default_rng(4)
  for _ in range(5):
    labels = rng.integers(0, 4, size=12)
    ids = np.array([f"c_{x}" for x in labels])
    normalized = contrib._get_normalized_id(ids)  # pylint: disable=protected-access
    for alpha in (0.2, 0.7, 1.5):
      theirs = np.log(contrib._get_cdf_single(normalized, alpha))  # pylint: disable=protected-access
      ours = uis_rnn.crp_log_likelihood([labels], alpha)
      # Theirs leaves out the returns' log N_k, which does not depend on alpha.
      returns = ours - uis_rnn.crp_log_likelihood([labels], 1.0)
      assert returns == pytest.approx(
          theirs - np.log(contrib._get_cdf_single(normalized, 1.0)))  # pylint: disable=protected-access


def test_transition_log_probs_by_hand():
  p, alpha = 0.2, 0.7
  counts = np.array([3, 1, 2, 9], np.float32)  # slot 3 is not a speaker yet
  got = np.asarray(uis_rnn.transition_log_probs(counts, 3, 0, p, alpha))
  d = 3 + 1 + 2 + alpha
  expected = [np.log(1 - p), np.log(p) + np.log(1) - np.log(d), np.log(p) + np.log(2) - np.log(d),
              -np.inf, np.log(p) + np.log(alpha) - np.log(d)]
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  normalized = np.asarray(uis_rnn.transition_log_probs(counts, 3, 0, p, alpha, normalized=True))
  d = 1 + 2 + alpha
  np.testing.assert_allclose(normalized[1:3], np.log(p) + np.log([1, 2]) - np.log(d), rtol=1e-6)
  assert np.exp(normalized).sum() == pytest.approx(1.0, rel=1e-6)
  first = np.asarray(uis_rnn.transition_log_probs(np.zeros(2), 0, -1, p, alpha))
  np.testing.assert_array_equal(first, [-np.inf, -np.inf, 0.0])
  jitted = jax.jit(uis_rnn.transition_log_probs, static_argnames="normalized")
  np.testing.assert_allclose(jitted(counts, 3, 0, p, alpha), got, rtol=1e-6)


def test_observation_nll_is_uisrnn_decoder_score():
  mean, x, sigma2 = np.array([0.0, 1.0]), np.array([1.0, 3.0]), np.array([0.5, 2.0])
  assert float(uis_rnn.observation_nll(mean, x, sigma2)) == pytest.approx(1 / 1 + 4 / 4)
