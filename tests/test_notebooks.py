"""Every notebook executes top to bottom on CPU (smoke size), in a kernel that inherits
the 8 simulated devices set by conftest, and computes what it says it does: a cell added
after the notebook's own checks the values the notebook computed, in the same kernel."""

import glob
import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.launch_utils import REPO

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))

# Per notebook: code run after its last cell, asserting on the notebook's own variables.
CHECKS = {
    # Digits (10 classes): the smoke run learns them (measured 0.74), its probe too (0.91).
    "quickstart.ipynb": """
assert summary["eval/accuracy"] > 0.5, summary
assert summary["probe/test_accuracy"] > 0.7, summary
""",
    # Every method's encoder gives features a linear probe reads digits from (chance 0.1,
    # measured 0.90-0.92).
    "supcon.ipynb": """
for method, result in results.items():
  assert result["probe/test_accuracy"] > 0.7, (method, result["probe/test_accuracy"])
""",
    # Digits 5-9 (chance 0.2, measured 0.92); every private cell spent the ε it was
    # calibrated to.
    "dp_transfer.ipynb": """
assert summary["accuracy/nonprivate_probe"] > 0.6, summary["accuracy/nonprivate_probe"]
private = [r for r in rows if r["epsilon"] is not None]
assert len(private) == len(config.methods) * len(config.epsilons) * len(config.seeds)
for r in private:
  assert abs(r["epsilon_accounted"] - r["epsilon"]) <= 2e-3 * r["epsilon"], r
""",
    # The printed first-episode returns are those of the recorded trajectory: its rewards
    # summed up to each environment's first `done`; and every recorded action is one the
    # game has.
    # FICO reproduces the paper's shares within a point; on Adult's validation half equal
    # opportunity equalises the TPRs (the groups' expected rates), above the majority class.
    "fairness.ipynb": """
for constraint, share in shares.items():
  assert abs(share - paper[constraint]) <= 1.0, (constraint, share)
assert np.ptp(adult["equal_opportunity"]["rule"].tpr) < 1e-9
assert adult["equal_opportunity"]["accuracy"][0] > 0.8
""",
    "mgdt.ipynb": """
from jaxml.envs import minatar
traj = result["trajectory"]
valid = minatar.valid_action_table(minatar.make_games(list(config.data.games)))
for g in range(len(config.data.games)):
  assert valid[g][traj["action"][:, g]].all(), g
  for e in range(traj["done"].shape[2]):
    ends = np.flatnonzero(traj["done"][:, g, e])
    if len(ends):
      want = traj["reward"][:ends[0] + 1, g, e].sum()
      assert np.isclose(result["first_return"][g, e], want), (g, e)
    else:
      assert np.isnan(result["first_return"][g, e]), (g, e)
""",
    # The inverse model reads actions from frame pairs above chance (measured 0.61, chance
    # 1/7); plans fit the scene of the window they were planned from better than the next
    # window's (often the same episode's, so the margin is small: measured 0.0068 vs 0.0081).
    "unipi.ipynb": """
assert summary["eval/inverse_accuracy"] > 2 / len(babyai.ACTIONS), summary
own = unipi.consistency_error(plans, read["video"], static)
other = unipi.consistency_error(np.roll(plans, 1, 0), read["video"], static)
assert own < other, (own, other)
""",
    # The relative PD recomputed from the saved replicas' test predictions is the one the run
    # logged; ReLU's gradient jumps by 1 at 0, SmeLU's (and the generalized one's) changes by
    # ~eps / beta across its joins (measured <= 0.001); the study has a row per activation and
    # beta, and its activation runs are the replicas trained above (same config and seed).
    "smooth_activations.ipynb": """
for spec, pd in recomputed_pd.items():
  assert abs(pd - summaries[spec]["eval/pd/relative"]) < 1e-4, (spec, pd, summaries[spec])
assert abs(gradient_jumps["relu"] - 1.0) < 1e-6, gradient_jumps
smooth = {spec: jump for spec, jump in gradient_jumps.items() if spec != "relu"}
assert max(smooth.values()) < 10 * eps, gradient_jumps
labels = {(r["part"], r["label"]) for r in study_rows}
assert {("activations", spec) for spec in config.activations} <= labels, labels
assert {("beta", f"β={beta:g}") for beta in config.betas} <= labels, labels
for r in study_rows:
  if r["part"] == "activations":
    assert abs(r["pd_mean"] - summaries[r["label"]]["eval/pd/relative"]) < 1e-4, r
""",
    # ERM reads the colour: right on aligned test digits far more than on misaligned ones;
    # the misaligned accuracy recomputed from saved predictions is the one each run logged;
    # DeDiER's weights are the NumPy formula's; Grad-CAM maps lie in [0, 1] with max 1.
    "early_readouts.ipynb": """
erm = summaries["ERM"]
assert erm["eval/aligned/aligned/accuracy"] > erm["eval/aligned/misaligned/accuracy"] + 0.3, erm
for name, value in recomputed.items():
  assert abs(value - summaries[name]["eval/aligned/worst_group/accuracy"]) < 1e-9, name
np.testing.assert_allclose(weights, numpy_weights, rtol=1e-5)
for name, m in maps.items():
  assert m.shape == (8, 8, 8) and m.min() >= 0 and np.allclose(m.max((1, 2)), 1), name
""",
    # The weights recomputed from the learned run's helper give the timescales the run logged
    # per cluster; every cluster's newest examples weigh more than its oldest. On the future
    # periods every method is well above chance (10 classes; lowest period measured 0.445,
    # uniform's last), and the recent-weighted ones beat ERM: measured means learned 0.822,
    # last 0.842, exponential 0.756, uniform 0.704 (seed 1: 0.822, 0.832, 0.798, 0.779). The
    # learned timescales do not order by drift rate here (all ~0.5 periods, the shortest).
    "concept_drift.ipynb": """
np.testing.assert_allclose(recomputed_timescales, logged_timescales, rtol=1e-3)
assert (by_age[:, 0] > by_age[:, -1]).all(), by_age
for method, accuracy in future.items():
  assert accuracy.min() > 0.3 and mean_future[method] > 0.6, (method, accuracy)
assert mean_future["last"] > mean_future["uniform"] + 0.03, mean_future
assert mean_future["learned"] > mean_future["uniform"] + 0.03, mean_future
assert mean_future["exponential"] > mean_future["uniform"], mean_future
""",
    # Few labels on frozen features: the run logged its few-shot probe at steps 100-300 and
    # more shots help; on the held-out digits' identity the frozen features go from well above
    # chance (0.2) at one label per class to > 0.9 at 50 (measured 0.56 -> 0.97; raw pixels
    # are ahead at small n: the notebook says so); the sparse probe's last point keeps every
    # unit; all three attributes agree at most as often as each one does.
    "few_shot.ipynb": """
assert sorted(curve) == [100, 200, 300], sorted(curve)
assert curve[300]["fewshot/held_out/25shot"] > curve[300]["fewshot/held_out/1shot"], curve[300]
frozen = curves["identity"]["frozen features (ridge)"]
assert frozen[0] > 0.4 and frozen[-1] > 0.9 and frozen[-1] > frozen[0] + 0.3, frozen
for task, points in unit_curves.items():
  assert points[-1].num_units == features["train"].shape[1], task
assert agreement["agreement/all"] <= min(agreement["agreement/thickness"],
                                         agreement["agreement/slant"],
                                         agreement["agreement/size"]), agreement
""",
    # COPD (simulated cohort): the liability ranks true COPD far above chance and above the
    # GOLD rule (measured AUROC 0.979 vs 0.931; -FEV1/FVC 0.985), its top quartile dies more
    # than its bottom (0.164 vs 0.056), the Cox HR per SD excludes 1, and the GWAS of the
    # liability recovers the simulator's causal effects (r 0.95, 4 causal SNPs at 1e-4).
    "copd.ipynb": """
assert results["copd", "ML liability"][0] > 0.95, results
assert results["copd", "ML liability"][0] > results["copd", "GOLD (FEV1/FVC < 0.7)"][0], results
assert deaths[3] > deaths[0] + 0.05, deaths
assert hazard["ML liability"]["hr_lower"] > 1, hazard
assert gwas["ml_liability"]["truth_r"] > 0.7, gwas["ml_liability"]
assert gwas["ml_liability"]["causal_found_p1e-04"] >= 2, gwas["ml_liability"]
assert gwas["ml_liability"]["lambda_gc"] < 1.15, gwas["ml_liability"]
""",
    # `diarize` on the unpadded test conversations gives the labels the runner scored (same
    # accuracy); UIS-RNN is perfect at low noise, and ahead of oracle-count k-means where the
    # noise is high (measured 0.955 vs 0.841 at 1.5, 0.879 vs 0.726 at 2.0).
    "diarization.ipynb": """
assert abs(recomputed - summaries[1.0]["eval/accuracy"]) < 1e-6, (recomputed, summaries[1.0])
ours, kmeans = np.array(curves["UIS-RNN"]), np.array(curves["k-means, oracle count"])
assert ours[0] > 0.99, ours
assert np.all(ours > np.array(curves["one speaker"]) + 0.3), curves
assert np.all(ours[2:] > kmeans[2:]), curves
""",
    # Odour: (R)- and (S)-carvone are one graph; the ranking metrics equal sklearn's and the
    # run's own logged ones; the small network ranks descriptors well above chance (measured
    # 0.74) and every descriptor family clusters in its embedding above the shuffled control.
    "odor.ipynb": """
from sklearn.metrics import roc_auc_score
assert carvones_identical
gnn = results["graph network"]["auroc/macro"]
np.testing.assert_allclose(gnn, roc_auc_score(test_labels, scores, average="macro"), rtol=1e-6)
np.testing.assert_allclose(gnn, summary["eval/auroc/macro"], rtol=1e-5)
assert gnn > 0.65, gnn
for name, row in separation.items():
  assert row["auroc"] > row["control_auroc"] + 0.05, (name, row)
""",
}


def test_every_notebook_has_checks():
  assert sorted(CHECKS) == sorted(os.path.basename(p) for p in NOTEBOOKS)


# A cell may take this long. A kernel still running after STACKS_AFTER seconds (every notebook
# here takes under two minutes) writes every thread's Python stack to its stderr, again each
# STACKS_AFTER seconds; pytest shows that stderr under a failure, so a hang names where it waits.
TIMEOUT = 600
STACKS_AFTER = TIMEOUT - 60
WATCHDOG = ("import faulthandler as _faulthandler, sys as _sys\n"
            f"_faulthandler.dump_traceback_later({STACKS_AFTER}, repeat=True, "
            "file=_sys.__stderr__)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path):
  notebook = nbformat.read(path, as_version=4)
  notebook.cells.insert(0, nbformat.v4.new_code_cell(WATCHDOG))
  notebook.cells.append(nbformat.v4.new_code_cell(CHECKS[os.path.basename(path)]))
  NotebookClient(notebook, timeout=TIMEOUT, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(path)}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  errors = ["\n".join(o.get("traceback", [])) for o in outputs if o["output_type"] == "error"]
  assert not errors, errors[0][-3000:]
  images = [o for o in outputs if "image/png" in o.get("data", {})]
  assert images, "the notebook's plots were not displayed"
