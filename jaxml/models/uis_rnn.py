"""UIS-RNN, the unbounded interleaved-state RNN of Zhang et al., "Fully Supervised Speaker
Diarization" (ICASSP 2019), as the public PyTorch code (google/uis-rnn) trains it.

Every speaker of a conversation is one instance of a shared RNN. A speaker's observations
(segment embeddings, d-vectors) x1, x2, ... are fed in turn, after a zero vector, to a GRU that
starts from a learned initial hidden state h0; a "mean network" linear -> relu -> linear maps
each GRU output to the observation dimension:

    (h1, o0) = step(h0, 0)      (h2, o1) = step(h1, x1)   ...   (h_{n+1}, o_n) = step(h_n, x_n)

and the speaker's next observation is predicted as the running mean of those outputs,

    mu_{n+1} = (o0 + o1 + ... + o_n) / (n + 1),       x_{n+1} ~ N(mu_{n+1}, diag(sigma2)),

so a speaker seen once is predicted by (o0 + o1) / 2 and a new speaker by o0 alone (the same
for every new speaker). `speaker_means` computes mu_1..mu_L for padded batches of sub-sequences
(training); `step` is one GRU step plus the mean network for one speaker (decoding: a decoder
keeps, per speaker, the hidden state, the sum of its outputs and their count). sigma2 [D] is
learned; training clamps it to >= SIGMA2_FLOOR after each update, as uisrnn does.

uisrnn's own beam search departs from this at its second and later observations (it
predicts a speaker's k-th observation, k >= 2, from o_1..o_{k-1}, leaving o0 out, and its
second from o1 alone); we document the training semantics above, which the loss
(`jaxml/losses/uis_rnn.py`) fits, for decoders to use.

The GRU is torch's (gates r, z, n in that order, a bias on both the input and the hidden
transform; the hidden bias of n is inside the reset gate), so weights copied from uisrnn's
`CoreRNN` give the same outputs; flax's `nnx.GRUCell` has no hidden-side bias. Depth 1: the
paper and uisrnn's default use one layer (uisrnn's `rnn_dropout` only acts between layers,
so it does nothing at depth 1 and is not offered here).

Host-side functions (NumPy, called outside jit) estimate the speaker-change probability
`transition_bias` and the CRP concentration `crp_alpha` from training label sequences;
`transition_log_probs` gives the log-prior of each assignment of the next segment (stay,
switch to an existing speaker, a new speaker) and works inside jit too.

Config (`create`), every key optional: `hidden` (512, uisrnn's default `rnn_hidden_size`),
`sigma2_init` (0.1, uisrnn's initial sigma2).
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxml.core import checks

SIGMA2_FLOOR = 1e-6  # uisrnn clamps sigma2 to this after every update ("numerical issues")
DEFAULTS = {"hidden": 512, "sigma2_init": 0.1}
RULES = {"model.hidden": checks.count(1),
         "model.sigma2_init": checks.in_range(SIGMA2_FLOOR)}


class TorchGRUCell(nnx.Module):
  """torch.nn.GRU's cell: r = s(Wir x + bir + Whr h + bhr), z = s(Wiz x + biz + Whz h + bhz),
  n = tanh(Win x + bin + r (Whn h + bhn)), h' = (1 - z) n + z h; kernels [in, 3H] in r, z, n
  order (torch's weight_ih_l0.T and weight_hh_l0.T)."""

  def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs):
    self.input = nnx.Linear(in_features, 3 * hidden, rngs=rngs)
    self.recurrent = nnx.Linear(hidden, 3 * hidden, rngs=rngs,
                                kernel_init=nnx.initializers.orthogonal())

  def __call__(self, hidden: jax.Array, x: jax.Array) -> jax.Array:
    xr, xz, xn = jnp.split(self.input(x), 3, axis=-1)
    hr, hz, hn = jnp.split(self.recurrent(hidden), 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1.0 - z) * n + z * hidden


class CoreRNN(nnx.Module):
  """The GRU and the mean network: the weights uisrnn regularises and clips (its
  `rnn_model`); the initial state and sigma2 live outside, in `UISRNN`."""

  def __init__(self, observation_dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.gru = TorchGRUCell(observation_dim, hidden, rngs=rngs)
    self.mean_hidden = nnx.Linear(hidden, hidden, rngs=rngs)
    self.mean_out = nnx.Linear(hidden, observation_dim, rngs=rngs)

  def __call__(self, hidden: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    hidden = self.gru(hidden, x)
    return hidden, self.mean_out(jax.nn.relu(self.mean_hidden(hidden)))


class UISRNN(nnx.Module):
  """The speaker model: `rnn` (GRU + mean network), `initial_hidden` [H], `sigma2` [D]."""

  def __init__(self, observation_dim: int, *, hidden: int = 512, sigma2_init: float = 0.1,
               rngs: nnx.Rngs):
    checks.check_values({"model": {"hidden": hidden, "sigma2_init": sigma2_init}}, RULES)
    self.observation_dim, self.hidden = observation_dim, hidden
    self.rnn = CoreRNN(observation_dim, hidden, rngs=rngs)
    self.initial_hidden = nnx.Param(jnp.zeros((hidden,), jnp.float32))
    self.sigma2 = nnx.Param(jnp.full((observation_dim,), sigma2_init, jnp.float32))

  def step(self, hidden: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One speaker's step: (hidden' [H], out [D]) from hidden [H] and its observation x [D]
    (the zero vector for the step that opens a speaker, from `initial_hidden`). The
    prediction of the speaker's next observation is the mean of all its outputs so far
    (module doc). Leading batch dimensions are allowed."""
    return self.rnn(hidden, x)

  def speaker_means(self, subsequences: jax.Array, mask: jax.Array) -> jax.Array:
    """Running-mean predictions [B, L, D] of each sub-sequence's observations x1..xL
    (subsequences [B, L, D], one speaker each, real steps first, then padding marked 0 by
    mask [B, L]): row t is the mean of the outputs after inputs [0, x1, ..., x_t], which
    predicts x_{t+1}. Padding steps only follow real ones, so they change no real row;
    their rows are set to 0."""
    batch = subsequences.shape[0]
    inputs = jnp.concatenate([jnp.zeros_like(subsequences[:, :1]), subsequences[:, :-1]], 1)
    hidden = jnp.broadcast_to(self.initial_hidden[...], (batch, self.hidden))

    def scan_step(hidden, x):
      hidden, out = self.step(hidden, x)
      return hidden, out

    _, outputs = jax.lax.scan(scan_step, hidden, jnp.swapaxes(inputs, 0, 1))
    outputs = jnp.swapaxes(outputs, 0, 1)  # [B, L, D]
    counts = jnp.arange(1, outputs.shape[1] + 1, dtype=outputs.dtype)[None, :, None]
    return jnp.cumsum(outputs, axis=1) / counts * mask[..., None]


def create(model_config: ml_collections.ConfigDict | dict, observation_dim: int,
           rngs: nnx.Rngs) -> UISRNN:
  """A UISRNN from a `model` config block (the module doc lists its keys)."""
  block = dict(model_config or {})
  settings = {name: block.get(name, default) for name, default in DEFAULTS.items()}
  return UISRNN(observation_dim, **settings, rngs=rngs)


def observation_nll(mean: jax.Array, x: jax.Array, sigma2: jax.Array) -> jax.Array:
  """sum_d (x_d - mean_d)^2 / (2 sigma2_d): the score uisrnn's decoder gives an observation
  under a speaker (the Gaussian's -log density up to 1/2 sum log(2 pi sigma2), which is the
  same for every choice of speaker and so left out). Reduces the last axis."""
  return jnp.sum((x - mean) ** 2 / (2.0 * sigma2), axis=-1)


# ---------------------------------------------------------------------------------------
# Host-side estimates of the speaker-turn prior (NumPy) and its log-probabilities.


def _turns(labels) -> np.ndarray:
  """The speaker of each turn (run of one label) of a label sequence, in order, speakers
  renamed 0, 1, ... by first appearance."""
  labels = list(labels)
  turns = [labels[i] for i in range(len(labels)) if i == 0 or labels[i] != labels[i - 1]]
  order: dict = {}
  for label in turns:
    order.setdefault(label, len(order))
  return np.array([order[label] for label in turns], np.int64)


def estimate_transition_bias(label_sequences: Sequence[Sequence], smooth: float = 1.0
                             ) -> tuple[float, float]:
  """(transition_bias, denominator): the smoothed maximum-likelihood probability that a
  segment's speaker differs from the previous segment's, (changes + smooth) / (pairs of
  consecutive segments + 2 smooth), over every conversation's label sequence (uisrnn's
  estimate; `smooth` keeps it off 0 and 1 for a data set with no, or only, changes).

  Note the direction: uisrnn's `transition_bias` (the paper's p0) is the probability of a
  speaker CHANGE; staying with the same speaker has probability 1 - transition_bias. The
  denominator lets estimates from several data sets be pooled, as uisrnn's `fit` does."""
  changes, pairs = smooth, 2.0 * smooth
  for labels in label_sequences:
    labels = np.asarray(labels)
    changes += float(np.sum(labels[1:] != labels[:-1]))
    pairs += max(len(labels) - 1, 0)
  return changes / pairs, pairs


def crp_log_likelihood(label_sequences: Sequence[Sequence], crp_alpha) -> np.ndarray:
  """log P(which speaker each speaker change goes to | the changes) under the distance-
  dependent CRP of the paper's Eq. 7, summed over conversations, for each alpha in
  `crp_alpha` (a scalar or an array): at a change, an existing speaker k other than the
  current one is chosen with probability N_k / (sum_{j != current} N_j + alpha) and a new
  speaker with alpha / (sum_{j != current} N_j + alpha), N_k counting speaker k's turns so far.
  This is what uisrnn's contrib `range_search_crp_alpha` maximises (its `_get_cdf`)."""
  alpha = np.asarray(crp_alpha, np.float64)
  total = np.zeros_like(alpha)
  for labels in label_sequences:
    turns = _turns(labels)
    counts = np.zeros(len(turns) + 1)
    if len(turns):
      counts[turns[0]] = 1
    for previous, speaker in zip(turns[:-1], turns[1:]):
      others = counts.sum() - counts[previous]
      seen = speaker < np.count_nonzero(counts)
      total = total + (np.log(counts[speaker]) if seen else np.log(alpha)) - np.log(others + alpha)
      counts[speaker] += 1
  return total


def estimate_crp_alpha(label_sequences: Sequence[Sequence], low: float = 1e-3,
                       high: float = 1e3, points: int = 2001) -> float:
  """The alpha maximising `crp_log_likelihood` over a log-spaced grid on [low, high]
  (uisrnn's contrib searches a linear grid of step 0.01 on (0, 1); the paper tunes alpha as
  a hyperparameter, and uisrnn's default, 1.0, is what `config.uis_rnn.crp_alpha` starts
  from). With no change to an existing speaker in the data the likelihood grows with alpha
  and the grid's top is returned."""
  grid = np.geomspace(low, high, points)
  return float(grid[int(np.argmax(crp_log_likelihood(label_sequences, grid)))])


def transition_log_probs(block_counts: jax.Array, num_speakers: jax.Array,
                         last_speaker: jax.Array, transition_bias: float, crp_alpha: float,
                         *, normalized: bool = False) -> jax.Array:
  """The log-prior [K + 1] of assigning the next segment to speakers 0..K-1 (slots at and
  past `num_speakers` are -inf) and, in slot K, to a new speaker (number `num_speakers`:
  a decoder moves it there), given block_counts [K] (turns so far of each speaker) and the
  previous segment's speaker `last_speaker`. With p = transition_bias (a change):

    stay with last_speaker          log(1 - p)
    switch to existing k != last    log p + log N_k   - log(D)
    a new speaker                   log p + log alpha - log(D)

  where D = sum_k N_k + alpha, uisrnn's decoder (its `_update_beam_state`), which counts the
  current speaker's turns in D, so the probabilities sum to less than 1; with `normalized`,
  D = sum_{k != last} N_k + alpha, the paper's and `crp_log_likelihood`'s, which sum to 1.
  With no speaker yet (num_speakers 0), the new speaker gets log 1 = 0. jnp: usable in jit."""
  block_counts = jnp.asarray(block_counts, jnp.float32)
  slots = jnp.arange(block_counts.shape[-1])
  existing = slots < num_speakers
  counts = jnp.where(existing, block_counts, 0.0)
  denominator = jnp.sum(counts) + crp_alpha
  if normalized:
    denominator = denominator - jnp.sum(jnp.where(slots == last_speaker, counts, 0.0))
  log_change = jnp.log(transition_bias) - jnp.log(denominator)
  switch = log_change + jnp.log(jnp.where(existing, jnp.maximum(counts, 1e-30), 1.0))
  scores = jnp.where(slots == last_speaker, jnp.log1p(-transition_bias), switch)
  scores = jnp.where(existing, scores, -jnp.inf)
  new = jnp.where(num_speakers > 0, log_change + jnp.log(crp_alpha), 0.0)
  return jnp.concatenate([scores, new[None]])
