"""Few-shot evaluation's cost (issue 24): one call of jaxml's evaluator (every k and draw)
against a scikit-learn loop over the same fits, and the whole in-run evaluation as a share of
a training run.

A classifier (experiments/classifier.py: the digits CNN) trains on digits 0-4 with the probe
task `held_out=digits@5-9` (jaxml/training/few_shot.py). Then, on that run's frozen features
of the probe task:

  jaxml    `jaxml.evaluators.few_shot.evaluate`: every draw of a k in one jitted, vmapped
           closed-form ridge (compiled once per k, timed apart);
  sklearn  `RidgeClassifier(alpha=l2 * n)` fitted and scored per draw on the same rows
           (`few_shot.draw_shots`), the loop a user would write; its accuracies must equal
           jaxml's (printed).

Each side is timed --repeats times, round-robin (a change in the machine's load falls on both
alike); the median call. The in-run cost adds the feature pass over the probe task's splits;
its share of training is cost / (cost + few_shot.every x the run's seconds per step).

  python benchmarks/few_shot.py            # 300 training steps, shots 1,5,10,25 x 5 draws
  python benchmarks/few_shot.py --quick    # seconds (tests)
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from experiments import classifier as classifier_experiment  # noqa: E402
from jaxml import runner, trained  # noqa: E402
from jaxml.evaluators import few_shot  # noqa: E402
from jaxml.training import few_shot as run_few_shot  # noqa: E402

TASK = "held_out=digits@5-9"
QUICK = {"steps": 20, "repeats": 2}


def run_config(steps: int, shots, draws: int):
  config = classifier_experiment.get_config()
  config.data.classes = (0, 1, 2, 3, 4)
  config.num_steps = steps
  config.eval_every = config.checkpoint_every = steps
  config.log_every = max(1, steps // 4)
  config.progress = False
  config.few_shot.update({"tasks": TASK, "shots": tuple(shots), "draws": draws})
  return config


def sklearn_loop(train_x, train_y, test_x, test_y, draws_by_k, l2: float) -> dict:
  from sklearn.linear_model import RidgeClassifier  # pylint: disable=import-outside-toplevel
  out = {}
  for k, rows in draws_by_k.items():
    out[k] = np.array([RidgeClassifier(alpha=l2 * len(r)).fit(train_x[r], train_y[r]).score(
        test_x, test_y) for r in rows])
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--shots", default="1,5,10,25")
  parser.add_argument("--draws", type=int, default=5)
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args(argv)
  if args.quick:
    args.steps, args.repeats = QUICK["steps"], QUICK["repeats"]
  shots = tuple(int(k) for k in args.shots.split(","))
  config = run_config(args.steps, shots, args.draws)
  l2 = float(config.few_shot.l2)

  with tempfile.TemporaryDirectory() as workdir:
    summary = runner.run(config, workdir)
    run = trained.load(workdir)
    (task,) = run_few_shot.load_tasks(run.config, run.dataset, True)

    def features():
      train = run.features(task.dataset.train)
      test = run.features(task.dataset.test)
      return [np.asarray(a) for a in (*train, *test)]

    train_x, train_y, test_x, test_y = features()
    classes = task.dataset.num_classes
    start = time.perf_counter()
    ours = few_shot.evaluate(train_x, train_y, test_x, test_y, classes, shots=shots,
                             draws=args.draws, l2=l2)
    compile_seconds = time.perf_counter() - start
    draws_by_k = {k: few_shot.draw_shots(train_y, classes, k, args.draws, 0) for k in shots}
    times = {"features": [], "jaxml": [], "sklearn": []}
    for _ in range(args.repeats):
      start = time.perf_counter()
      features()
      times["features"].append(time.perf_counter() - start)
      start = time.perf_counter()
      few_shot.evaluate(train_x, train_y, test_x, test_y, classes, shots=shots,
                        draws=args.draws, l2=l2)
      times["jaxml"].append(time.perf_counter() - start)
      start = time.perf_counter()
      theirs = sklearn_loop(train_x, train_y, test_x, test_y, draws_by_k, l2)
      times["sklearn"].append(time.perf_counter() - start)
  median = {k: statistics.median(v) for k, v in times.items()}
  disagreement = max(float(np.max(np.abs(ours[k].accuracies - theirs[k]))) for k in shots)
  step_seconds = 1.0 / summary["perf/steps_per_second"]
  per_call = median["features"] + median["jaxml"]
  every = int(config.eval_every if args.quick else 500)
  result = {
      "seconds": median, "compile_seconds": compile_seconds, "step_seconds": step_seconds,
      "ratio": median["sklearn"] / median["jaxml"], "disagreement": disagreement,
      "calls_in_steps": per_call / step_seconds,
      "share": per_call / (per_call + every * step_seconds), "every": every,
      "accuracy": {k: ours[k].mean for k in shots}, "feature_dim": int(train_x.shape[-1])}
  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}; features [{len(train_x)} + {len(test_x)}, "
        f"{result['feature_dim']}], {classes} classes, shots {shots} x {args.draws} draws")
  print("accuracy: " + ", ".join(f"{k}-shot {a:.3f}" for k, a in result["accuracy"].items())
        + f" (max |jaxml - sklearn| over draws {disagreement:.1e})")
  print(f"jaxml evaluator {median['jaxml'] * 1e3:.1f} ms per call (compile "
        f"{compile_seconds:.2f} s once), sklearn loop {median['sklearn'] * 1e3:.1f} ms: "
        f"sklearn / jaxml: {result['ratio']:.2f}x")
  print(f"in-run call (feature pass {median['features'] * 1e3:.1f} ms + fits) = "
        f"{result['calls_in_steps']:.1f} training steps of {step_seconds * 1e3:.2f} ms; "
        f"every {every} steps it is {100 * result['share']:.2f}% of the run")
  return result


if __name__ == "__main__":
  main()
