"""Private fine-tuning of a linear head on frozen features: a study over methods and ε.

The last-layer recipe of "Large-Scale Transfer Learning for Differentially Private Image
Classification" with the methods of "Differentially Private Image Classification from
Features" (Mehta et al.), end to end:

  1. Public pre-training. `config.public`, a whole classifier or supcon config, is trained in
     `<workdir>/public` (resumed if interrupted, only re-evaluated once finished); or
     `config.public_workdir` names a finished jaxml run whose encoder is used as is (and
     `config.public` is ignored).
  2. Features. The frozen encoder's pre-head features of the private train and test splits
     (`config.data`), centred on the mean feature of the *public* train split (no privacy
     cost) and then scaled to L2 norm `features.clip` (`normalize`) or clipped to it.
  3. Private heads. Every method of `config.methods` at every ε of `config.epsilons` and seed
     of `config.seeds`, from a zero head, with its noise calibrated so that the composition
     of its Gaussian releases has exactly that ε at δ (`config.delta`; 0 means n^-1.1),
     accounted by `dp_accounting` from the method object that does the releasing.
  4. Non-private references on the same features: the linear probe (softmax, l2 picked on
     held-out train rows) and every method without noise (ε = ∞ in the table).

Each finished cell is a row of the study's results log (`results.jsonl`, keyed by method,
ε and seed under a fingerprint of every other setting); run again on the same workdir, cells
already there for the same settings are skipped. A row records its privacy in full: the
releases its method made (`linear_heads.release`: σ, count, DP-SGD's sampling rate), δ, the
accountant, the neighbouring relation and the ε they compose to (`epsilon_accounted`), so
that ε can be recomputed from the row alone. Artifacts: `table.md` (test accuracy, mean ±
std over seeds, whether the paper's ordering holds here, and each cell's releases, δ,
accountant and ε) and `accuracy_vs_epsilon.png`,
next to the common study outputs (jaxml/studies/base.py). Seeds vary the privacy noise and
DP-SGD's sampling; the encoder is trained once.

Study protocol: `build(config) -> Study` (jaxml/studies/base.py); `config.study = "dp_features"`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxml import trained
from jaxml.core import files
from jaxml.core import mesh as mesh_lib
from jaxml.data import load_dataset
from jaxml.errors import ConfigError
from jaxml.evaluators import linear_probe
from jaxml.privacy import accounting, linear_heads
from jaxml.studies import figures, results, runs, tables
from jaxml.studies.base import Study

METHODS = ("least_squares", "newton", "feature_covariance", "sgd")
LABELS = {"least_squares": "DP-LS", "newton": "DP-Newton", "feature_covariance": "DP-FC",
          "sgd": "DP-SGD"}
PROBE = "non-private probe"
# The sweep's axes: they say which cells exist (the row key), not what is in a cell.
SWEEP = ("methods", "epsilons", "seeds")
# A method "holds up" at an ε when its mean test accuracy is within this many points of the
# best private method's there (the table says so in words).
ROBUST_GAP = 0.02


def build(config) -> Study:
  """The study of `config`, after every check that can fail on the config alone."""
  validate(config)
  epsilons = [float(e) for e in config.epsilons] + [math.inf]
  headline = tuple(f"accuracy/{m}/eps={e:g}" for m in config.methods for e in epsilons)
  return Study(run=functools.partial(fit, config),
               headline=headline + ("accuracy/nonprivate_probe",),
               outputs=(results.RESULTS, "artifacts/table.md",
                        "artifacts/accuracy_vs_epsilon.png"))


def validate(config) -> None:
  """Every check that can fail on the config alone, before anything trains."""
  methods = list(config.methods)
  if not methods or any(m not in METHODS for m in methods):
    raise ConfigError(f"methods={methods}: choose from {', '.join(METHODS)}")
  if not config.epsilons or any(not e > 0 for e in config.epsilons):
    raise ConfigError(f"epsilons={list(config.epsilons)} must be a non-empty list of values > 0")
  if not config.seeds:
    raise ConfigError("seeds must list at least one seed")
  if not config.features.clip > 0:
    raise ConfigError(f"features.clip={config.features.clip} must be > 0")
  if config.features.center not in ("public", "none"):
    raise ConfigError(f"features.center={config.features.center!r}: choose public or none")
  if config.accountant not in accounting.ACCOUNTANTS:
    raise ConfigError(f"accountant={config.accountant!r}: choose one of "
                      f"{', '.join(accounting.ACCOUNTANTS)}")
  if config.delta < 0:
    raise ConfigError(f"delta={config.delta} must be >= 0 (0 means n**-1.1)")
  if not config.public_workdir and not config.get("public"):
    raise ConfigError("give public (a pre-training config) or public_workdir (a finished run)")
  for name in methods:
    hp = config[name]
    if hp.get("l2", 0) < 0:
      raise ConfigError(f"{name}.l2={hp.l2} must be >= 0")
    if "steps" in hp and hp.steps < 1:
      raise ConfigError(f"{name}.steps={hp.steps} must be >= 1")
    for key in ("gram_budget", "hessian_budget"):
      if key in hp and not 0 < hp[key] < 1:
        raise ConfigError(f"{name}.{key}={hp[key]} must be in (0, 1)")
    if "learning_rate" in hp and not hp.learning_rate > 0:
      raise ConfigError(f"{name}.learning_rate={hp.learning_rate} must be > 0")
  if "sgd" in methods:
    if not 0 < config.sgd.sampling_probability <= 1:
      raise ConfigError(f"sgd.sampling_probability={config.sgd.sampling_probability} must be "
                        "in (0, 1]")
    if not config.sgd.l2_clip > 0:
      raise ConfigError(f"sgd.l2_clip={config.sgd.l2_clip} must be > 0")


# LS, Newton and FC at one ε share the same budget; PLD calibration takes seconds each.
_calibrate_gaussian = functools.lru_cache(maxsize=64)(accounting.calibrate_gaussian)


def make_method(name: str, config, epsilon: float, delta: float, num_classes: int):
  """The method object whose releases have (epsilon, delta)-DP; epsilon = inf: no noise."""
  hp = config[name].to_dict()
  clip = float(config.features.clip)
  if name == "sgd":
    sigma = 0.0 if math.isinf(epsilon) else accounting.calibrate_noise(
        epsilon, hp["sampling_probability"], hp["steps"], delta, accountant=config.accountant)
    return linear_heads.SgdHead(hp["l2_clip"], sigma, hp["sampling_probability"], hp["steps"],
                                hp["learning_rate"], hp.get("l2", 0.0))
  sigma = 0.0 if math.isinf(epsilon) else _calibrate_gaussian(
      epsilon, delta, accountant=config.accountant)
  cls = {"least_squares": linear_heads.LeastSquares, "newton": linear_heads.Newton,
         "feature_covariance": linear_heads.FeatureCovariance}[name]
  return cls.calibrated(sigma, feature_clip=clip, num_classes=num_classes, **hp)


def preprocess(x: np.ndarray, center: np.ndarray | None, clip: float, normalize: bool):
  """Centre (on public statistics), then every row to norm `clip` (normalize) or <= clip."""
  x = np.asarray(x, np.float32) - (0 if center is None else center)
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  scale = clip / np.maximum(norms, 1e-12)
  return x * (scale if normalize else np.minimum(1.0, scale))


def _sharded(mesh, array: np.ndarray, valid_rows: int):
  """`array` zero-padded to a multiple of the device count, as a global array on `data`
  (every host holds the whole array, so each device takes its rows from it)."""
  pad = -valid_rows % mesh.devices.size
  array = np.concatenate([array, np.zeros((pad,) + array.shape[1:], array.dtype)])
  sharding = mesh_lib.data_sharding(mesh)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _fit_and_score(method, key, x, y, valid, test_x, test_y, test_valid):
  w = method.fit(key, x, y, valid)
  correct = lambda f, labels, keep: jnp.sum((jnp.argmax(f @ w, 1) == jnp.argmax(labels, 1))
                                            & keep) / jnp.sum(keep)
  return correct(x, y, valid), correct(test_x, test_y, test_valid)


def _cell_key(seed: int, method: str, epsilon: float) -> jax.Array:
  tag = zlib.crc32(f"{method}/{epsilon!r}".encode())
  return jax.random.fold_in(jax.random.key(seed), tag)


def fingerprint(config) -> str:
  """What a results row depends on: every setting but the sweep's axes (in the row key), the
  device count and progress bars."""
  return results.fingerprint(config, exclude=SWEEP)


def extract_features(config, workdir):
  """(train x, train labels, test x, test labels, num_classes) of the private data, from the
  encoder of `public_workdir`, or of the public run trained (or resumed) in <workdir>/public."""
  if config.public_workdir:
    encoder = trained.load(config.public_workdir)
  else:
    public = config.public.copy_and_resolve_references()
    public.progress = public.progress and config.progress
    runs.run_once(public, os.path.join(workdir, "public"))
    encoder = trained.load(os.path.join(workdir, "public"))
  dataset = load_dataset(config.data)
  batch = int(config.features.batch_size)
  center = None
  if config.features.center == "public":
    center = encoder.features(encoder.dataset.train, batch)[0].mean(0)
  prep = lambda x: preprocess(x, center, float(config.features.clip), config.features.normalize)
  train_x, train_y = encoder.features(dataset.train, batch)
  test_x, test_y = encoder.features(dataset.test, batch)
  return prep(train_x), train_y, prep(test_x), test_y, dataset.num_classes


def fit(config, workdir: str) -> dict:
  """Runs (or resumes) the whole study in `workdir`; returns its summary."""
  mesh = mesh_lib.make_mesh(config.get("num_devices", 0))
  train_x, train_y, test_x, test_y, num_classes = extract_features(config, workdir)
  n = len(train_x)
  delta = float(config.delta) or accounting.default_delta(n)
  accounting.check_delta(delta, n)
  is_chief = jax.process_index() == 0

  onehot = lambda labels: np.eye(num_classes, dtype=np.float32)[labels]
  arrays = [_sharded(mesh, a, len(a)) for a in
            (train_x, onehot(train_y), np.ones(n, bool), test_x, onehot(test_y),
             np.ones(len(test_x), bool))]
  fit_and_score = jax.jit(_fit_and_score)

  log = results.ResultsLog(os.path.join(workdir, results.RESULTS), fingerprint(config),
                          write=is_chief)
  for name in config.methods:
    for epsilon in [*config.epsilons, math.inf]:
      stored_eps = None if math.isinf(epsilon) else float(epsilon)
      seeds = [int(s) for s in config.seeds if (name, stored_eps, int(s)) not in log]
      if not seeds:  # every cell logged: no need to calibrate the noise again
        continue
      method = make_method(name, config, float(epsilon), delta, num_classes)
      spent = (math.inf if math.isinf(epsilon) else accounting.epsilon_of_events(
          method.event(num_classes), delta, config.accountant))
      for seed in seeds:
        key = (name, stored_eps, seed)
        train_acc, test_acc = jax.device_get(fit_and_score(
            method, _cell_key(seed, name, epsilon), *arrays))
        row = {"method": name, "epsilon": stored_eps, "seed": seed,
               "test_accuracy": float(test_acc), "train_accuracy": float(train_acc),
               "epsilon_accounted": None if math.isinf(spent) else spent, "delta": delta,
               "noise": {k: v for k, v in vars(method).items()
                         if k.startswith("sigma") or k == "noise_multiplier"},
               # With δ, what recomputes epsilon_accounted with dp_accounting alone.
               "accountant": config.accountant, "neighboring_relation": "add_or_remove_one",
               "releases": method.releases(num_classes)}
        logging.info("dp_features %s eps=%s seed=%s: test accuracy %.4f", name, stored_eps,
                     seed, test_acc)
        log.put(key, row)

  probe = linear_probe.evaluate(train_x, train_y, test_x, test_y, num_classes, l2=None)
  return report(config, log.rows(), probe["test_accuracy"], workdir if is_chief else None,
                delta=delta, num_train=n, feature_dim=train_x.shape[1])


def ordering(stats, methods, epsilons) -> dict:
  """Whether the paper's ordering holds: DP-LS best among private methods at the smallest
  ε, and DP-FC within ROBUST_GAP of the best private method at every ε."""
  out = {}
  best = {e: max(stats[(m, e)][0] for m in methods) for e in epsilons}
  if "least_squares" in methods and len(methods) > 1:
    smallest = min(epsilons)
    out["ls_best_at_smallest_epsilon"] = stats[("least_squares", smallest)][0] == best[smallest]
  if "feature_covariance" in methods and len(methods) > 1:
    gaps = {e: best[e] - stats[("feature_covariance", e)][0] for e in epsilons}
    out["fc_gap_to_best"] = {f"{e:g}": g for e, g in gaps.items()}
    out["fc_robust"] = max(gaps.values()) <= ROBUST_GAP
  return out


def _ordering_text(order: dict) -> str:
  lines = []
  if "ls_best_at_smallest_epsilon" in order:
    lines.append("- DP-LS is the best private method at the smallest ε: "
                 + ("**yes**" if order["ls_best_at_smallest_epsilon"] else "**no**"))
  if "fc_robust" in order:
    gaps = ", ".join(f"ε={e}: {100 * g:.1f}" for e, g in order["fc_gap_to_best"].items())
    lines.append(f"- DP-FC is within {100 * ROBUST_GAP:.0f} points of the best private method "
                 f"at every ε: {'**yes**' if order['fc_robust'] else '**no**'} "
                 f"(gap in points: {gaps})")
  return "\n".join(lines) + "\n"


def privacy_table(rows) -> str:
  """What each private cell released and spent (the same for every seed), in markdown: from
  its results row, enough to recompute its ε with dp_accounting (rows written before rows
  recorded releases show "?")."""
  lines = ["Privacy of each cell (add/remove-one neighbours): the Gaussian releases as "
           "noise multiplier σ × count (q: Poisson sampling rate), δ, accountant and the ε "
           "they compose to.\n", "| method | ε | releases | δ | accountant | ε accounted |",
           "|---|---|---|---|---|---|"]
  cells = {(r["label"], r["eps"]): r for r in rows if r["epsilon"] is not None}
  for (label, eps), row in sorted(cells.items()):
    releases = ", ".join(
        f"{r['what']} σ={r['noise_multiplier']:.4g} × {r['count']}"
        + (f" (q={r['sampling_probability']:g})" if "sampling_probability" in r else "")
        for r in row.get("releases", ())) or "?"
    lines.append(f"| {label} | {eps:g} | {releases} | {row['delta']:.3g} | "
                 f"{row.get('accountant', '?')} | {row['epsilon_accounted']:.4g} |")
  return "\n".join(lines) + "\n"


def report(config, rows, probe_accuracy: float, workdir: str | None, *, delta: float,
           num_train: int, feature_dim: int) -> dict:
  """The table, plot and summary of the study's rows (files only when `workdir` is given)."""
  methods = list(config.methods)
  epsilons = [float(e) for e in config.epsilons]
  labelled = [{**r, "label": LABELS[r["method"]],
               "eps": math.inf if r["epsilon"] is None else r["epsilon"]} for r in rows
              if r["method"] in methods and (r["epsilon"] is None or r["epsilon"] in epsilons)
              and r["seed"] in list(config.seeds)]
  stats = tables.aggregate(labelled, key="method", x="eps", value="test_accuracy")
  order = ordering(stats, methods, epsilons)
  labels = {m: LABELS[m] for m in methods}
  label_stats = {(labels[m], e): v for (m, e), v in stats.items()}
  summary = {f"accuracy/{m}/eps={e:g}": stats[(m, e)][0] for (m, e) in stats}
  summary.update({"accuracy/nonprivate_probe": probe_accuracy, "delta": delta,
                  "num_private_train": num_train, "feature_dim": feature_dim,
                  "ordering": order, "step": len(labelled)})
  if workdir is None:
    return summary
  artifacts = os.path.join(workdir, "artifacts")
  files.makedirs(artifacts)
  table = tables.markdown_table(label_stats, list(labels.values()), [*epsilons, math.inf])
  text = (f"Test accuracy (%) of private linear heads on frozen features, mean ± std over "
          f"seeds {list(config.seeds)}; δ = {delta:.3g}, n = {num_train} private training "
          f"examples, {feature_dim}-dim features. ε = ∞ is the same method without noise. "
          f"Non-private probe (softmax, l2 by held-out split): {100 * probe_accuracy:.1f}.\n\n"
          f"{table}\n{_ordering_text(order)}\n{privacy_table(labelled)}")
  files.write_text(os.path.join(artifacts, "table.md"), text)
  figures.plot_vs_x(label_stats, list(labels.values()), epsilons,
                    os.path.join(artifacts, "accuracy_vs_epsilon.png"),
                    references={PROBE: probe_accuracy},
                    title=f"private linear heads, δ={delta:.2g}, n={num_train}")
  return summary

