"""COPD from raw spirograms with noisy labels (issue 23; Cosentino et al., Nature Genetics
2023): the ML liability (an ensemble of 1-D ResNets, experiments/copd.py) trained on noisy and
on clean labels, against -FEV1/FVC, the GOLD and GLI-LLN rules and logistic regression on the
spirometry features; scored against the TRUE status and hospitalisation (AUROC/AUPRC with
bootstrap intervals, PR curves), survival (Kaplan-Meier by quartile, log-rank, Cox HR per SD)
and as GWAS phenotypes, over seeds (jaxml/studies/copd.py).

Default (CPU, 2 cores, 20-30 minutes: 3 seeds, each two ensembles of 5 width-8 members trained
on 2,000 people and scored on 5,000; measured on 2 shared cores: 20 min in all, each ensemble
100-180 s, the GWAS and bootstrap the rest; results in benchmarks/README.md):
  python -m launch.main --config experiments/copd_study.py --workdir runs/copd_study
  -> runs/copd_study/artifacts/copd.md, pr_copd.png, pr_hospitalised.png, km_liability.png,
     km_ratio.png, gwas_s<seed>/
Rerun the same command after an interruption: finished runs and rows are reused.
Smoke (about a minute: one seed, experiments/copd.py:smoke, 200 resamples):
  python -m launch.main --config experiments/copd_study.py:smoke --workdir /tmp/jaxml/copd_study
GPU (experiments/copd.py:gpu, 20,000 train / 10,000 test people, width 64):
  python -m launch.main --config experiments/copd_study.py:gpu --workdir runs/copd_study_gpu
Other seeds or sizes: --config.seeds="(0,)" --config.run.num_steps=300
--config.run.data.train_individuals=1000 (--config.run.<key> for any run setting).
"""

import ml_collections

from experiments import base, copd
from jaxml.core.config_args import one_of, parse_arg


def get_config(arg=None):
  opts = parse_arg(arg, smoke=False, gpu=False, seed=0)
  variant = one_of(opts, "smoke", "gpu")
  c = base.study_config("copd", seed=opts.seed)
  c.seeds = (0, 1, 2)
  c.resamples = 1000  # bootstrap resamples per interval (every scorer on the same ones)
  c.level = 0.95
  # GWAS of the test individuals (jaxml/studies/copd_gwas.py): covariates age, sex, height
  # and num_pcs genotype PCs.
  c.gwas = ml_collections.ConfigDict({"num_pcs": 4, "threshold": 5e-8})
  # The ensemble of every seed (the study sets seed, data.seed and, for the clean run, the
  # label noise). Evaluated and saved at the end only: the study reads the final members.
  c.run = copd.get_config(variant or None)
  c.run.eval_every = c.run.checkpoint_every = c.run.num_steps
  if variant == "smoke":
    c.seeds = (opts.seed,)
    c.resamples = 200
    c.gwas.num_pcs = 2
  return c
