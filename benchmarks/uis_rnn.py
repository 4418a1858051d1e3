"""UIS-RNN (issue 22): decoding throughput of jaxml's jitted beam search against google/uis-rnn's
`predict` on one model and the same utterances, with both accuracies; and training steps/s of
jaxml's jitted train step against uisrnn's `fit` iterations at equal work per step.

Everything runs in one process (uisrnn's decoder in its child process, below), in this order:

  data       `dvectors` conversations (jaxml/data/sources/dvectors.py): 256-d d-vectors,
             2..--speakers speakers, --length segments, --train-conversations for training
             and --utterances test conversations (speakers unseen in training) to decode.
  model      one trained model for both decoders: jaxml's train step
             (`jaxml.algos.uis_rnn.build`, experiments/uis_rnn.py's settings: hidden 512,
             uisrnn's loss, Adam, clipping, sigma2 clamp) for --model-steps steps of
             --model-batch conversations, one time-ordered sub-sequence per speaker
             (num_permutations 1), Adam at --model-lr: brief (under a minute here; uisrnn
             trains 20,000 iterations). What is compared is the two decoders on one model,
             not the model: so brief a training leaves a 512-unit model at 256 dimensions
             predicting about the same for every speaker (measured: 400 steps at Adam 1e-2,
             test error per dimension still 1/dim, that of predicting 0; likewise with the
             d-vectors scaled to unit variance per dimension), and both decoders then find
             one speaker in most utterances, where agreeing is easy. At --quick sizes (16
             dimensions, 32 units) 40 steps already tell speakers apart, and the test checks
             the two decoders' labels there. transition_bias is estimated from the training
             labels, crp_alpha is 1.0 (uisrnn's defaults). The weights, initial state, sigma2,
             transition_bias and crp_alpha are exported into a `uisrnn.UISRNN` (`to_uisrnn`:
             torch's weight = our kernel transposed, as tests/models/test_uis_rnn.py checks
             for the CoreRNN); one GRU + mean-network step of both, from the initial state on
             the zero vector and then a test segment, is compared (max |difference| printed).
  decoding   the test utterances, at uisrnn's decoding defaults (beam_size 10, look_ahead 1,
             test_iteration 2), by
               uisrnn         uisrnn's `predict_single`, through the decoding process of
                              `jaxml.studies.diarization_peers.uisrnn_predict` (a fresh
                              interpreter, `_Decoder`) with its per-utterance timeout: an
                              utterance that takes longer than --timeout s is reported, not
                              waited on. The process is started once, outside the timing
                              (importing torch takes seconds); each utterance's decode is
                              timed from sending it to receiving its labels (the transfer is
                              ~1 ms of the seconds decoding takes). torch threads = cores.
               jaxml uisrnn   `jaxml.models.uis_rnn_decode.beam_search` with
                              mean_rule="uisrnn" (uisrnn's own prediction rule: it must give
                              uisrnn's labels; the agreement is printed), with the model's
                              `step`, jitted and vmapped over all utterances at once, padded to
                              the longest (padding segments cost compute, not labels), at most
                              --max-speakers speakers per utterance (uisrnn has no cap; the
                              utterances where uisrnn used more are counted).
               jaxml running  the same with mean_rule="running", the rule the model is trained
                              with (an extra row: its labels may differ).
             jaxml's compilation (`lower().compile()`) is timed apart and left out of the
             throughput. --repeats round-robin repeats over the three (a change in the
             machine's load falls on all alike); utterances/s and frames/s (real segments)
             from the median repeat; accuracy (Hungarian sequence-match, uisrnn's metric) and
             DER (`jaxml.evaluators.diarization.batch_metrics`, per-utterance means).
  training   steps/s of jaxml's jitted train step (`Steps.build` on a 1-device mesh, as a run
             does) at experiments/uis_rnn.py's settings (num_permutations 10, Adam 1e-3) with
             --train-batch conversations per step, against `uisrnn.UISRNN.fit` (through
             `diarization_peers.uisrnn_fit`, on the same training conversations, its defaults:
             num_permutations 10, Adam 1e-3) with `batch_size` = the mean number of real
             sub-sequences in jaxml's step (train-batch x 10 permutations x the mean speakers
             per training conversation), so both take the same number of sub-sequences, drawn
             from the same pool of (conversation, speaker, turn order), per update. jaxml pads
             each to the most segments of one speaker (a static shape) and keeps a slot for
             every speaker number up to the most speakers of a conversation; uisrnn packs
             its sampled sub-sequences to the longest of them: the share of jaxml's slot-steps
             that are real is printed. --windows round-robin windows of --train-window steps
             (a `fit` call of that many iterations each; a fit's setup, data resizing and a
             fresh model, is inside it and printed apart from a 1-iteration fit), medians.

  python benchmarks/uis_rnn.py            # defaults: about 5 minutes on 2 loaded CPU cores
  python benchmarks/uis_rnn.py --quick    # tiny sizes, seconds (tests)

The defaults decode 10 utterances of 32-48 segments twice with uisrnn, the bulk of the run
time: uisrnn's Python beam search took ~9 s per such utterance on the loaded 2-core
development VM (one torch call per candidate and segment), so the run takes ~5 minutes.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# torch's OpenMP threads spin at barriers; on a shared CPU that starves the other thread (see
# benchmarks/odor.py). Passive waiting is the peer's best setting here. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib.metadata  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from experiments import uis_rnn as uis_rnn_experiment  # noqa: E402
from jaxml.algos import uis_rnn  # noqa: E402
from jaxml.core import mesh as mesh_lib  # noqa: E402
from jaxml.data import load_dataset, pipeline  # noqa: E402
from jaxml.evaluators import diarization  # noqa: E402
from jaxml.models import uis_rnn_decode  # noqa: E402
from jaxml.studies import diarization_peers as peers  # noqa: E402
from jaxml.training.steps import Steps  # noqa: E402

DECODING = {"beam_size": 10, "look_ahead": 1, "test_iteration": 2}  # uisrnn's defaults
VARIANTS = ("uisrnn", "jaxml uisrnn", "jaxml running")
RULES = {"jaxml uisrnn": "uisrnn", "jaxml running": "running"}
QUICK = {"dim": 16, "hidden": 32, "speakers": 3, "length": (10, 14), "train_conversations": 16,
         "utterances": 4, "model_steps": 40, "model_batch": 8, "model_lr": 3e-2,
         "train_batch": 1, "repeats": 1, "windows": 2, "train_window": 2, "timeout": 120.0}


def cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def experiment_config(args, **changes):
  """experiments/uis_rnn.py's config on this benchmark's data, with `changes` (dotted keys)."""
  config = uis_rnn_experiment.get_config()
  config.data.update({"seed": 0, "dim": args.dim, "min_speakers": 2,
                      "max_speakers": args.speakers, "min_length": args.length[0],
                      "max_length": args.length[1],
                      "train_conversations": args.train_conversations,
                      "test_conversations": args.utterances})
  config.model.hidden = args.hidden
  config.num_devices, config.progress = 1, False
  for key, value in changes.items():
    block, _, name = key.rpartition(".")
    (config[block] if block else config)[name] = value
  return config


def real_segments(split) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """Each conversation's embeddings [T_i, D] (float64, as uisrnn wants) and speakers [T_i]."""
  arrays = split.arrays
  keep = [m > 0 for m in arrays["step_mask"]]
  return ([x[k].astype(np.float64) for x, k in zip(arrays["embeddings"], keep)],
          [s[k].astype(np.int64) for s, k in zip(arrays["speakers"], keep)])


def train_model(config, dataset, mesh):
  """(state, seconds, final loss) after config.num_steps jaxml train steps from seed 0."""
  steps = Steps.build(uis_rnn.build(config, dataset), mesh)
  state = steps.init(jax.random.key(config.seed))
  key = jax.device_put(jax.random.key(config.seed + 1), mesh_lib.replicated(mesh))
  began = time.perf_counter()
  metrics = {}
  for step in range(config.num_steps):
    batch = pipeline.train_batch(dataset.train, mesh, config.seed, step, config.batch_size)
    state, metrics = steps.train(state, batch, key)
  return state, time.perf_counter() - began, float(metrics["loss"])


# ---------------------------------------------------------------------------------------
# One model on both sides.


def to_uisrnn(model, transition_bias: float, crp_alpha: float):
  """A `uisrnn.UISRNN` holding `model`'s (a jaxml `UISRNN`) weights, initial state and sigma2,
  and the turn prior: torch's GRU weight_ih / weight_hh are our input / recurrent kernels
  transposed (gates r, z, n in both), the mean network's Linear weights likewise."""
  import torch  # pylint: disable=import-outside-toplevel
  import uisrnn  # pylint: disable=import-outside-toplevel
  settings = peers.uisrnn_settings({"observation_dim": model.observation_dim,
                                    "rnn_hidden_size": model.hidden,
                                    "crp_alpha": float(crp_alpha)})
  model_args, _, _ = peers.uisrnn_namespaces(settings)
  peer = uisrnn.UISRNN(model_args)
  tensor = lambda a: torch.tensor(np.array(a, np.float32))
  rnn = model.rnn
  pairs = {"gru.weight_ih_l0": rnn.gru.input.kernel, "gru.bias_ih_l0": rnn.gru.input.bias,
           "gru.weight_hh_l0": rnn.gru.recurrent.kernel, "gru.bias_hh_l0": rnn.gru.recurrent.bias,
           "linear_mean1.weight": rnn.mean_hidden.kernel, "linear_mean1.bias": rnn.mean_hidden.bias,
           "linear_mean2.weight": rnn.mean_out.kernel, "linear_mean2.bias": rnn.mean_out.bias}
  peer.rnn_model.load_state_dict({name: tensor(np.asarray(value[...]).T)
                                  for name, value in pairs.items()})
  peer.rnn_init_hidden = torch.nn.Parameter(
      tensor(model.initial_hidden[...]).reshape(1, 1, model.hidden))
  peer.sigma2 = torch.nn.Parameter(tensor(model.sigma2[...]))
  peer.transition_bias, peer.crp_alpha = float(transition_bias), float(crp_alpha)
  return peer


def step_difference(model, peer, x: np.ndarray) -> float:
  """max |difference| of (hidden, out) after the zero vector and then x, jaxml against torch."""
  import torch  # pylint: disable=import-outside-toplevel
  hidden = model.initial_hidden[...]
  ours = []
  for value in (np.zeros_like(x), x):
    hidden, out = model.step(hidden, jnp.asarray(value, jnp.float32))
    ours += [np.asarray(hidden), np.asarray(out)]
  theirs, state = [], peer.rnn_init_hidden
  with torch.no_grad():
    for value in (np.zeros_like(x), x):
      out, state = peer.rnn_model(torch.tensor(value, dtype=torch.float32)[None, None], state)
      theirs += [state.numpy().reshape(-1), out.numpy().reshape(-1)]
  return max(float(np.max(np.abs(a - b))) for a, b in zip(ours, theirs))


# ---------------------------------------------------------------------------------------
# Decoding.


def jaxml_decoder(model, transition_bias, crp_alpha, sequences, masks, mean_rule: str,
                  max_speakers: int):
  """(compiled decode: params -> labels [N, T], compile seconds, params): beam_search with the
  model's step, vmapped over the utterances, jitted with the weights as arguments."""
  graphdef, params = nnx.split(model)
  prior = (jnp.float32(transition_bias), jnp.float32(crp_alpha))

  @jax.jit
  def decode(params, sequences, masks):
    model = nnx.merge(graphdef, params)
    search = functools.partial(uis_rnn_decode.beam_search, model.step, **DECODING,
                               max_speakers=max_speakers, mean_rule=mean_rule)
    labels, _ = jax.vmap(search, (None, None, None, None, 0, 0))(
        model.initial_hidden[...], model.sigma2[...], *prior, sequences, masks)
    return labels

  began = time.perf_counter()
  compiled = decode.lower(params, sequences, masks).compile()
  return (lambda: np.asarray(compiled(params, sequences, masks))), time.perf_counter() - began


class UisrnnDecoder:
  """uisrnn's `predict_single` in `diarization_peers`' decoding process, one utterance at a
  time with a timeout; an utterance that timed out once is not sent again."""

  def __init__(self, peer, timeout_s: float):
    self.peer, self.timeout_s = peer, timeout_s
    self.settings = peers.uisrnn_settings(DECODING)
    _, _, self.inference_args = peers.uisrnn_namespaces(self.settings)
    self.process = None
    self.timed_out: set[int] = set()

  def __call__(self, sequences) -> tuple[list, float]:
    """(labels or None per utterance, seconds spent decoding: waiting for the answers)."""
    labels, seconds = [], 0.0
    for i, sequence in enumerate(sequences):
      if i in self.timed_out:
        labels.append(None)
        continue
      if self.process is None:  # started outside the timing (importing torch)
        self.process = peers._Decoder(self.peer, self.inference_args)  # pylint: disable=protected-access
      began = time.perf_counter()
      out = self.process.decode(sequence, self.timeout_s)
      if out is None:  # killed: left out of the time and the scores; a fresh process next
        self.timed_out.add(i)
        self.process = None
      else:
        seconds += time.perf_counter() - began
      labels.append(out)
    return labels, seconds

  def close(self):
    if self.process is not None:
      self.process.close()
      self.process = None


def padded_labels(labels: list, length: int) -> np.ndarray:
  out = np.full((len(labels), length), -1, np.int64)
  for i, row in enumerate(labels):
    if row is not None:
      out[i, :len(row)] = row
  return out


def decode_all(model, peer, prior, test, args) -> dict:
  """Every decoder's labels, seconds per repeat and compile seconds (see the module doc)."""
  sequences = jnp.asarray(test["embeddings"])
  masks = jnp.asarray(test["step_mask"] > 0)
  runners, compile_s = {}, {}
  for name, rule in RULES.items():
    runners[name], compile_s[name] = jaxml_decoder(model, *prior, sequences, masks, rule,
                                                   args.max_speakers)
  uisrnn_decoder = UisrnnDecoder(peer, args.timeout)
  utterances = real_segments_of(test)
  seconds = {name: [] for name in VARIANTS}
  labels = {}
  try:
    for _ in range(args.repeats):
      for name in VARIANTS:
        if name == "uisrnn":
          out, spent = uisrnn_decoder(utterances)
          labels[name] = padded_labels(out, test["speakers"].shape[1])
        else:
          began = time.perf_counter()
          labels[name] = runners[name]()
          spent = time.perf_counter() - began
        seconds[name].append(spent)
  finally:
    uisrnn_decoder.close()
  return {"labels": labels, "seconds": seconds, "compile_s": compile_s,
          "timed_out": sorted(uisrnn_decoder.timed_out)}


def real_segments_of(test) -> list[np.ndarray]:
  return [x[m > 0].astype(np.float64) for x, m in zip(test["embeddings"], test["step_mask"])]


# ---------------------------------------------------------------------------------------
# Training.


def training_throughput(args, dataset, mesh) -> dict:
  """Median steps/s of jaxml's train step and of uisrnn's fit iterations at equal work."""
  config = experiment_config(args, batch_size=args.train_batch)
  permutations = int(config.uis_rnn.num_permutations)
  steps = Steps.build(uis_rnn.build(config, dataset), mesh)
  state = steps.init(jax.random.key(0))
  key = jax.device_put(jax.random.key(1), mesh_lib.replicated(mesh))
  batches = [pipeline.train_batch(dataset.train, mesh, config.seed, step, args.train_batch)
             for step in range(args.train_window * (args.windows + 1))]
  max_speakers, max_length = uis_rnn.static_sizes(dataset)
  speakers = dataset.train.arrays["num_speakers"]
  per_step = args.train_batch * permutations * float(np.mean(speakers))
  uisrnn_batch = max(1, round(per_step))
  train_x, train_y = real_segments(dataset.train)
  real_steps = float(np.mean([np.sum(m) for m in dataset.train.arrays["step_mask"]]))
  slot_steps = max_speakers * max_length
  facts = {"subsequences jaxml": per_step, "uisrnn batch_size": uisrnn_batch,
           "jaxml slots": args.train_batch * permutations * max_speakers,
           "slot length": max_length, "real share": real_steps / slot_steps}
  fit_settings = {"observation_dim": args.dim, "rnn_hidden_size": args.hidden,
                  "batch_size": uisrnn_batch, "num_permutations": permutations}

  def jaxml_window(window: int) -> float:
    nonlocal state
    began = time.perf_counter()
    metrics = None
    for i in range(args.train_window):
      state, metrics = steps.train(state, batches[window * args.train_window + i], key)
    metrics["loss"].block_until_ready()
    return time.perf_counter() - began

  def uisrnn_window(window: int, iterations: int = args.train_window) -> float:
    began = time.perf_counter()
    peers.uisrnn_fit(train_x, train_y, {**fit_settings, "train_iteration": iterations,
                                        "seed": window})
    return time.perf_counter() - began

  began = time.perf_counter()
  jaxml_window(0)  # compilation and warm-up
  facts["jaxml first window s"] = time.perf_counter() - began
  uisrnn_window(0, 1)  # warm-up: first calls import and initialise
  facts["uisrnn 1-iteration fit s"] = uisrnn_window(0, 1)
  seconds = {"jaxml step": [], "uisrnn fit": []}
  for window in range(args.windows):
    seconds["jaxml step"].append(jaxml_window(window + 1))
    seconds["uisrnn fit"].append(uisrnn_window(window + 1))
  rates = {name: args.train_window / statistics.median(s) for name, s in seconds.items()}
  return {"rates": rates, "facts": facts}


# ---------------------------------------------------------------------------------------


def parse(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dim", type=int, default=256, help="d-vector size (uisrnn: 256)")
  parser.add_argument("--hidden", type=int, default=512, help="GRU size (uisrnn's default)")
  parser.add_argument("--speakers", type=int, default=4, help="most speakers per conversation")
  parser.add_argument("--length", type=int, nargs=2, default=(32, 48),
                      metavar=("MIN", "MAX"), help="segments per conversation")
  parser.add_argument("--train-conversations", type=int, default=200)
  parser.add_argument("--utterances", type=int, default=10, help="test conversations decoded")
  parser.add_argument("--model-steps", type=int, default=150)
  parser.add_argument("--model-batch", type=int, default=4, help="conversations per step")
  parser.add_argument("--model-lr", type=float, default=1e-2)
  parser.add_argument("--max-speakers", type=int, default=8, help="jaxml's speaker cap")
  parser.add_argument("--timeout", type=float, default=120.0,
                      help="seconds uisrnn may take for one utterance")
  parser.add_argument("--repeats", type=int, default=2, help="round-robin decoding repeats")
  parser.add_argument("--train-batch", type=int, default=1,
                      help="conversations per jaxml training step in the throughput test")
  parser.add_argument("--windows", type=int, default=3, help="training windows")
  parser.add_argument("--train-window", type=int, default=4, help="steps per training window")
  parser.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
  args = parser.parse_args(argv)
  if args.quick:
    for key, value in QUICK.items():
      setattr(args, key, value)
  counts = (args.dim, args.hidden, args.train_conversations, args.utterances, args.model_steps,
            args.model_batch, args.max_speakers, args.repeats, args.train_batch, args.windows,
            args.train_window)
  if min(counts) < 1 or args.speakers < 2 or not 1 <= args.length[0] <= args.length[1]:
    parser.error("sizes and counts must be >= 1, --speakers >= 2, 1 <= MIN <= MAX")
  return args


def main(argv=None):
  args = parse(argv)
  import torch  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(cores())
  versions = {name: importlib.metadata.version(name)
              for name in ("jaxlib", "flax", "torch", "uisrnn")}
  print("UIS-RNN: decoding and training throughput against google/uis-rnn")
  print(f"machine: {platform.platform()}, {cores()} CPU cores, load average (1, 5, 15 min) "
        "at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  print(f"python {platform.python_version()}, jax {jax.__version__} "
        f"({jax.devices()[0].platform}), " + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; torch threads {torch.get_num_threads()}, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
  mesh = mesh_lib.make_mesh(1)
  model_config = experiment_config(
      args, batch_size=args.model_batch, num_steps=args.model_steps,
      **{"uis_rnn.num_permutations": 1, "optimizer.learning_rate": args.model_lr})
  dataset = load_dataset(model_config.data)
  test = dataset.test.arrays
  frames = int(test["step_mask"].sum())
  print(f"data: dvectors, dim {args.dim}, 2-{args.speakers} speakers, {args.length[0]}-"
        f"{args.length[1]} segments; {len(dataset.train)} training conversations, "
        f"{len(dataset.test)} test utterances ({frames} segments, padded to "
        f"{test['step_mask'].shape[1]}; test speakers unseen in training)")

  state, train_s, loss = train_model(model_config, dataset, mesh)
  model = state.model()
  prior = (float(state.extra["transition_bias"]), float(state.extra["crp_alpha"]))
  peer = to_uisrnn(model, *prior)
  difference = step_difference(model, peer, np.asarray(test["embeddings"][0, 0]))
  print(f"model: jaxml UISRNN, hidden {args.hidden}, trained {args.model_steps} steps x "
        f"{args.model_batch} conversations (1 sub-sequence per speaker, Adam {args.model_lr:g}) "
        f"in {train_s:.1f} s, final loss {loss:.1f}; sigma2 mean "
        f"{float(jnp.mean(model.sigma2[...])):.4f}, transition_bias {prior[0]:.4f}, crp_alpha "
        f"{prior[1]:g}; exported to uisrnn, max |step difference| {difference:.1e}")

  print(f"decoding: beam_size {DECODING['beam_size']}, look_ahead {DECODING['look_ahead']}, "
        f"test_iteration {DECODING['test_iteration']}; jaxml max_speakers {args.max_speakers}, "
        f"all {len(dataset.test)} utterances in one vmapped call; {args.repeats} round-robin "
        f"repeats, medians; uisrnn timeout {args.timeout:g} s per utterance")
  decoded = decode_all(model, peer, prior, test, args)
  mask = test["step_mask"] > 0
  scored = np.ones(len(mask), bool)
  scored[decoded["timed_out"]] = False
  results = {}
  for name in VARIANTS:
    seconds = statistics.median(decoded["seconds"][name])
    if name == "uisrnn":  # timed-out utterances are not in its seconds either
      count, segments = int(scored.sum()), int(mask[scored].sum())
    else:
      count, segments = len(mask), frames
    metrics = diarization.batch_metrics(decoded["labels"][name][scored],
                                        test["speakers"][scored], mask[scored])
    results[name] = {"utterances/s": count / seconds, "frames/s": segments / seconds,
                     "accuracy": metrics["accuracy/mean"], "der": metrics["der/mean"],
                     "seconds": seconds}
  base = results["uisrnn"]["utterances/s"]
  print(f"\n{'decoder':<14} {'utterances/s':>12} {'frames/s':>10} {'x uisrnn':>9} "
        f"{'accuracy':>9} {'DER':>7} {'compile s':>10}")
  for name, row in results.items():
    compile_text = f"{decoded['compile_s'][name]:.1f}" if name in RULES else "-"
    print(f"{name:<14} {row['utterances/s']:>12.3f} {row['frames/s']:>10.1f} "
          f"{row['utterances/s'] / base:>9.1f} {row['accuracy']:>9.4f} {row['der']:>7.4f} "
          f"{compile_text:>10}")
  theirs, ours = decoded["labels"]["uisrnn"][scored], decoded["labels"]["jaxml uisrnn"][scored]
  same_utterances = int(np.sum(np.all(theirs == ours, axis=1)))
  same_segments = float(np.mean(theirs[mask[scored]] == ours[mask[scored]]))
  over_cap = int(np.sum(theirs.max(axis=1) + 1 > args.max_speakers))
  running = decoded["labels"]["jaxml running"][scored]
  print(f"labels, uisrnn vs jaxml uisrnn: {same_utterances} of {int(scored.sum())} utterances "
        f"identical, segment agreement {same_segments:.4f}; utterances where uisrnn used more "
        f"than {args.max_speakers} speakers: {over_cap}")
  print(f"labels, jaxml running vs uisrnn: "
        f"{int(np.sum(np.all(running == theirs, axis=1)))} of {int(scored.sum())} identical")
  print(f"uisrnn timeouts: {len(decoded['timed_out'])} "
        f"{decoded['timed_out'] if decoded['timed_out'] else ''}".rstrip())
  print(f"speakers found (mean per utterance): truth "
        f"{float(np.mean(test['num_speakers'][scored])):.2f}, uisrnn "
        f"{float(np.mean(theirs.max(axis=1) + 1)):.2f}, jaxml running "
        f"{float(np.mean(running.max(axis=1) + 1)):.2f}")

  training = training_throughput(args, dataset, mesh)
  rates, facts = training["rates"], training["facts"]
  print(f"\ntraining: jaxml {args.train_batch} conversation(s) x "
        f"{facts['jaxml slots'] // args.train_batch} slots (10 permutations x speaker slots) "
        f"of {facts['slot length']} steps = {facts['subsequences jaxml']:.1f} real "
        f"sub-sequences per step on average (real share of slot-steps "
        f"{facts['real share']:.2f}); uisrnn batch_size {facts['uisrnn batch_size']} "
        f"sub-sequences per iteration; {args.windows} round-robin windows of "
        f"{args.train_window} steps, medians; jaxml's first window (compilation) "
        f"{facts['jaxml first window s']:.1f} s, uisrnn's 1-iteration fit (setup + 1) "
        f"{facts['uisrnn 1-iteration fit s']:.2f} s")
  print(f"{'trainer':<14} {'steps/s':>9} {'sub-seq/s':>10}")
  for name, rate in rates.items():
    per = facts["subsequences jaxml"] if name == "jaxml step" else facts["uisrnn batch_size"]
    print(f"{name:<14} {rate:>9.3f} {rate * per:>10.1f}")
  print(f"jaxml / uisrnn training steps/s: {rates['jaxml step'] / rates['uisrnn fit']:.2f}")
  print("load average (1, 5, 15 min) at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
  return {"decoding": results, "compile_s": decoded["compile_s"],
          "labels": decoded["labels"], "truth": test["speakers"], "mask": mask,
          "timed_out": decoded["timed_out"], "same_utterances": same_utterances,
          "same_segments": same_segments, "training": rates, "training_facts": facts}


if __name__ == "__main__":
  main(sys.argv[1:])
