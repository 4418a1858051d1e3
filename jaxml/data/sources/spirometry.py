"""Simulated spirometry cohort for COPD from raw spirograms with noisy labels (issue 23).

Source `spirometry`: people with demographics, genotypes, a latent COPD severity, one forced
expiration each (volume–time at 10 ms and the flow–volume curve on 1,000 volumes), noisy COPD
labels as medical records give them, and outcomes, as in Cosentino et al., "Inference of
chronic obstructive pulmonary disease with deep learning on raw spirograms identifies new
genetic loci and improves risk models" (Nature Genetics 2023). UK Biobank's spirograms need
approved access, so the claims are tested on a model whose truth is known.

What it proves and what it does not. It tests the pipeline (curves in, liability score out),
robustness to label noise of a known kind and rate (labels vs `copd`), whether a score
recovers the causal loci a GWAS should find (`cohort`'s `causal`), and whether a score
stratifies simulated outcomes. It does NOT test the medical claim that real spirograms carry
COPD information beyond FEV1/FVC: here the curve's shape carries severity by construction
(the exponent k below), so a model that beats FEV1/FVC on this data shows it can read shape,
not that real lungs write it.

The model, person by person (defaults in DEFAULTS):

1. Demographics: sex ~ Bernoulli(1/2) (1 male); age ~ U(min_age, max_age); ancestry group g
   with probabilities `ancestry_proportions`, group g using GLI ethnicity code g + 1
   (jaxml.data.spirometry_reference); height ~ N(176, 7) cm (men) or N(163, 6.5) (women),
   5 cm less in GLI's Asian groups. Smoking: ever-smoker with prob `smoker_fraction`, whose
   pack-years ~ Gamma(2, pack_years_mean / 2); never-smokers 0.
2. Genotypes and genetic score g (jaxml.data.genotypes: Balding–Nichols drift with `fst`
   between groups, `num_causal` loci, var g = `heritability` under ancestral frequencies).
3. Liability l = g + age_effect (age - 55) / 10 + smoking_effect pack_years / 20 + e,
   e ~ N(0, 1 - heritability); severity s = max(0, l - onset) (0 for the disease-free).
4. Lung function: healthy GLI-2012 z-scores (z_FVC, z_ratio) ~ N(0, 1) with a per-person
   correlation chosen so that FEV1 = FVC * ratio has the GLI FEV1 spread
   (rho = (S_FEV1^2 - S_FVC^2 - S_ratio^2) / (2 S_FVC S_ratio), clipped to +-0.95). The true
   values are FVC = LMS_FVC(z_FVC) exp(-fvc_effect s), ratio = LMS_ratio(z_ratio)
   exp(-ratio_effect s) (LMS(z) = M (1 + L S z)^(1/L); the effects act on the log scale so
   that any severity stays in range), FEV1 = FVC ratio: disease-free people's are GLI-normal.
5. Curve shape (jaxml.data.spirogram): limb exponent k = k_0 + curvature_effect s
   (concave, scooped limb with severity), where the healthy k_0 in [0.8, 4] makes the ideal
   healthy blow's PEF, FVC_0 tau_k0(ratio_0), equal a target PEF = NHANES III predicted +
   SEE z_PEF, z_PEF = pef_correlation z_FEV1 + sqrt(1 - pef_correlation^2) N(0, 1)
   (FVC_0, ratio_0: the values at s = 0). Rise x_r = 0.03 exp(effort_sd N(0,1)) (a poor
   effort lowers PEF), tail 0.12. The measured PEF is an output of the curve. The true
   ratio is capped at 0.95 (GLI's upper tail passes 1 for some; a blow's cannot).
6. The blow, `duration` s at 10 ms: effort jitter m(t) = exp(effort_noise w(t)), w a
   unit-variance AR(1) with 0.2 s correlation time; with prob `cough` a cough at U(0.2, 1) s
   (flow dips to 15% for ~50 ms then bursts to 160%); with prob `early_termination` the
   subject stops at U(1.5 s, natural end) (FVC and so the ratio are mis-measured, as real
   early terminations do); blows longer than `duration` are cut there. Volumes are recorded
   in steps of `volume_resolution` litres (1 mL, as UK Biobank's integer mL). The measured
   fev1, fvc, ratio, pef come from the recorded samples (spirogram.measures).
7. True status copd = (s > copd_severity) and (true ratio < GLI LLN of the ratio): disease
   confirmed by airflow limitation; it uses the true, not the measured, ratio.
8. Noisy label: a case is labelled 0 with prob `underdiagnosis`; a non-case 1 with prob
   `false_positive_rate`.
9. Outcomes: hospitalised ~ Bernoulli(sigmoid(hospital_intercept + hospital_severity s +
   0.3 (age - 55) / 10)); death time T Weibull with shape `survival_shape`, scale
   `survival_scale` years and log-hazard mortality_severity s + mortality_age (age - 55) / 10
   + 0.3 male; censoring C = min(follow_up, Exp(dropout_rate)); survival_time = min(T, C),
   event = T <= C.

Each person's draws come from a stream keyed by (seed, person), in a fixed order, and their
genotypes from their own stream (seed, person): a person does not change with the cohort's
size, and rates (underdiagnosis, cough, ...) change only what they govern. Persons
0..train_individuals-1 are the training split, the rest the test split.

Examples (`load`): `flow_volume` float32 [1000, 1] (channels last), the input; `label` int32
(noisy), the target; `copd` int32 (true); measured `fev1`, `fvc`, `ratio`, `pef` float32;
`lln` (GLI LLN of FEV1/FVC), `fev1_predicted` (GLI median), `age`, `height`, `pack_years`,
`severity`, `survival_time` float32; `sex`, `ancestry`, `hospitalised`, `event`,
`individual` (row of `cohort`) int32; with `volume_time`, also `volume_time` float32
[duration / 10 ms, 1]. Genotypes are not examples: `cohort` returns them for a GWAS.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np
from scipy import signal, special

from jaxml.data import genotypes as genetics
from jaxml.data import spirogram
from jaxml.data import spirometry_reference as reference
from jaxml.data.base import ArraySplit, Dataset, Field, Task
from jaxml.errors import ConfigError

NAME = "spirometry"
DEFAULTS = {
    "seed": 0, "train_individuals": 2000, "test_individuals": 1000,
    "min_age": 40.0, "max_age": 70.0, "ancestry_proportions": (0.85, 0.15), "fst": 0.05,
    "smoker_fraction": 0.45, "pack_years_mean": 25.0,
    "num_snps": 2000, "num_causal": 30, "heritability": 0.3,
    "min_frequency": 0.05, "max_frequency": 0.5,
    "age_effect": 0.3, "smoking_effect": 0.5, "onset": 1.0,
    "ratio_effect": 0.3, "fvc_effect": 0.08,
    "pef_correlation": 0.7, "curvature_effect": 1.5, "copd_severity": 0.0,
    "effort_noise": 0.05, "effort_sd": 0.2, "cough": 0.03, "early_termination": 0.03,
    "duration": 15.0, "volume_resolution": 0.001,
    "underdiagnosis": 0.4, "false_positive_rate": 0.02,
    "hospital_intercept": -4.0, "hospital_severity": 1.5,
    "survival_shape": 1.5, "survival_scale": 88.0, "mortality_severity": 0.8,
    "mortality_age": 0.8, "follow_up": 12.0, "dropout_rate": 0.01,
    "grid": "relative", "grid_volume": 8.0, "volume_time": False,
}
PERSON_STREAM = 1
RISE, TAIL = 0.03, 0.12
JITTER_SECONDS = 0.2
GRIDS = ("relative", "absolute")
MAX_RATIO = 0.95  # GLI's ratio LMS exceeds 1 far in its upper tail; a blow cannot
CURVATURES = np.linspace(0.8, 4.0, 81)  # the healthy limb exponents `healthy_curvature` solves over
EXAMPLE_FIELDS = ("label", "copd", "fev1", "fvc", "ratio", "pef", "lln", "fev1_predicted",
                  "age", "height", "pack_years", "severity", "survival_time", "sex",
                  "ancestry", "hospitalised", "event", "individual")
INTEGER_FIELDS = ("label", "copd", "sex", "ancestry", "hospitalised", "event", "individual")


def _integer(values: dict, key: str, least: int) -> int:
  value = values[key]
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
    raise ConfigError(f"{NAME}: data.{key}={value!r} must be an integer >= {least}")
  return int(value)


def _number(values: dict, key: str, least: float = -np.inf, most: float = np.inf) -> float:
  value = values[key]
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(
      value) or not least <= value <= most:
    raise ConfigError(f"{NAME}: data.{key}={value!r} must be a finite number in "
                      f"[{least}, {most}]")
  return float(value)


def settings(data_config) -> dict:
  """The config's values over DEFAULTS (None takes the default), checked: one ConfigError
  naming the first bad key. Takes a ConfigDict or a plain dict."""
  values = {k: v if data_config.get(k) is None else data_config.get(k)
            for k, v in DEFAULTS.items()}
  for key, least in (("seed", 0), ("train_individuals", 1), ("test_individuals", 1),
                     ("num_snps", 1), ("num_causal", 1)):
    values[key] = _integer(values, key, least)
  if values["num_causal"] > values["num_snps"]:
    raise ConfigError(f"{NAME}: data.num_causal={values['num_causal']} exceeds "
                      f"data.num_snps={values['num_snps']}")
  values["min_age"] = _number(values, "min_age", 3, 95)
  values["max_age"] = _number(values, "max_age", values["min_age"], 95)
  for key in ("fst", "smoker_fraction", "cough", "early_termination", "underdiagnosis",
              "false_positive_rate"):
    values[key] = _number(values, key, 0, 1)
  values["fst"] = _number(values, "fst", 0, 0.5)
  values["heritability"] = _number(values, "heritability", 0, 0.99)
  values["min_frequency"] = _number(values, "min_frequency", 0.001, 0.5)
  values["max_frequency"] = _number(values, "max_frequency", values["min_frequency"], 0.999)
  for key in ("pack_years_mean", "survival_shape", "survival_scale", "follow_up"):
    values[key] = _number(values, key, 1e-6)
  values["duration"] = _number(values, "duration", 1.5, 60)
  values["grid_volume"] = _number(values, "grid_volume", 1e-3)
  values["pef_correlation"] = _number(values, "pef_correlation", -1, 1)
  for key in ("ratio_effect", "fvc_effect", "curvature_effect",
              "effort_noise", "effort_sd", "volume_resolution", "dropout_rate",
              "copd_severity"):
    values[key] = _number(values, key, 0)
  for key in ("age_effect", "smoking_effect", "onset", "hospital_intercept",
              "hospital_severity", "mortality_severity", "mortality_age"):
    values[key] = _number(values, key)
  proportions = values["ancestry_proportions"]
  if isinstance(proportions, (str, bytes)) or not hasattr(proportions, "__len__") or not (
      1 <= len(proportions) <= len(reference.ETHNICITIES)) or any(
          isinstance(p, bool) or not isinstance(p, numbers.Real) or not p > 0
          for p in proportions) or abs(sum(proportions) - 1) > 1e-6:
    raise ConfigError(f"{NAME}: data.ancestry_proportions={proportions!r} must be 1 to "
                      f"{len(reference.ETHNICITIES)} positive numbers summing to 1")
  values["ancestry_proportions"] = tuple(float(p) for p in proportions)
  if values["grid"] not in GRIDS:
    raise ConfigError(f"{NAME}: data.grid={values['grid']!r}: choose one of "
                      f"{', '.join(GRIDS)}")
  if not isinstance(values["volume_time"], bool):
    raise ConfigError(f"{NAME}: data.volume_time={values['volume_time']!r} must be a bool")
  return values


def _person(values: dict, person: int, samples: int) -> dict:
  """One person's random draws, in a fixed order from their own stream."""
  rng = np.random.default_rng([values["seed"], PERSON_STREAM, person])
  out = {"sex": int(rng.random() < 0.5),
         "age": rng.uniform(values["min_age"], values["max_age"]),
         "height_z": rng.standard_normal(),
         "ancestry": int(np.searchsorted(np.cumsum(values["ancestry_proportions"][:-1]),
                                         rng.random(), side="right"))}
  smoker = rng.random() < values["smoker_fraction"]
  pack_years = rng.gamma(2.0, values["pack_years_mean"] / 2)
  out["pack_years"] = pack_years if smoker else 0.0
  out.update(environment=rng.standard_normal(), z_fvc=rng.standard_normal(),
             z_other=rng.standard_normal(), pef_z=rng.standard_normal(),
             rise_z=rng.standard_normal(), jitter=rng.standard_normal(samples),
             cough_u=rng.random(), cough_time=rng.uniform(0.2, 1.0), stop_u=rng.random(),
             stop_fraction=rng.random(), label_u=rng.random(), hospital_u=rng.random(),
             death=rng.exponential(), dropout=rng.exponential())
  return out


def _stack(draws: list[dict]) -> dict[str, np.ndarray]:
  return {k: np.array([d[k] for d in draws]) for k in draws[0]}


def _jitter(noise: np.ndarray) -> np.ndarray:
  """Unit-variance AR(1) paths with correlation time JITTER_SECONDS, from white noise."""
  a = np.exp(-spirogram.SAMPLE_SECONDS / JITTER_SECONDS)
  start = noise[:, :1]  # the stationary start: w_0 ~ N(0, 1)
  path, _ = signal.lfilter([np.sqrt(1 - a**2)], [1, -a], noise[:, 1:], axis=1,
                           zi=a * start)
  return np.concatenate([start, path], axis=1)


def _cough(time: np.ndarray, at: float) -> np.ndarray:
  dip = 0.85 * np.exp(-(((time - at) / 0.025) ** 2))
  burst = 0.6 * np.exp(-(((time - at - 0.07) / 0.025) ** 2))
  return 1 - dip + burst


@functools.cache
def _tau_rows() -> tuple[np.ndarray, np.ndarray]:
  tables = [spirogram.exhalation_table(k, RISE, TAIL) for k in CURVATURES]
  return tables[0][0], np.stack([t[1] for t in tables])


def healthy_curvature(pef_over_fvc: np.ndarray, ratio: np.ndarray) -> np.ndarray:
  """The limb exponent k (in CURVATURES' range) whose ideal blow of this FEV1/FVC has
  PEF / FVC = tau_k(ratio) equal to `pef_over_fvc`; tau_k(r) grows with k."""
  x, rows = _tau_rows()
  at_ratio = np.maximum.accumulate(np.stack([np.interp(ratio, x, row) for row in rows]), 0)
  return np.array([np.interp(target, column, CURVATURES)
                   for target, column in zip(pef_over_fvc, at_ratio.T)])


def cohort(data_config) -> dict[str, np.ndarray]:
  """Every person's arrays (persons 0..N-1, train first): the example fields of the module
  doc ([N] each; `flow_volume` [N, 1000], `volume_time` [N, T] in litres), and for a GWAS
  `genotypes` [N, S] int8, `causal` [C] int (SNP indices), `effects` [C] (per allele, on the
  liability), `snp_frequencies` [S] (ancestral), `group_frequencies` [groups, S],
  `genetic_score`, `liability`, true `fev1_true`/`fvc_true`/`ratio_true`, `pef_predicted`,
  `pef_lln`, `curvature` (the limb exponent k), `cough`, `early_stop`, `split` (0 train,
  1 test)."""
  values = settings(data_config)
  seed, total = values["seed"], values["train_individuals"] + values["test_individuals"]
  samples = int(round(values["duration"] / spirogram.SAMPLE_SECONDS))
  p = _stack([_person(values, i, samples) for i in range(total)])
  sex, age, group = p["sex"], p["age"], p["ancestry"]
  ethnicity = group + 1
  asian = (ethnicity == 3) | (ethnicity == 4)
  height = np.where(sex == 1, 176.0, 163.0) + np.where(sex == 1, 7.0, 6.5) * p["height_z"]
  height = height - 5.0 * asian

  num_groups = len(values["ancestry_proportions"])
  ancestral, by_group = genetics.frequencies(seed, values["num_snps"], num_groups,
                                             values["fst"], values["min_frequency"],
                                             values["max_frequency"])
  causal, effects = genetics.causal_effects(seed, values["num_snps"], values["num_causal"],
                                            ancestral, values["heritability"])
  genotypes = genetics.genotype_matrix(seed, group, by_group)
  score = genetics.genetic_score(genotypes, causal, effects, ancestral)
  liability = (score + values["age_effect"] * (age - 55) / 10
               + values["smoking_effect"] * p["pack_years"] / 20
               + np.sqrt(1 - values["heritability"]) * p["environment"])
  severity = np.maximum(0.0, liability - values["onset"])

  lms = {name: reference.gli_lms(name, sex, age, height, ethnicity)
         for name in reference.PARAMETERS}
  s_fev1, s_fvc, s_ratio = (lms[n][2] for n in reference.PARAMETERS)
  rho = np.clip((s_fev1**2 - s_fvc**2 - s_ratio**2) / (2 * s_fvc * s_ratio), -0.95, 0.95)
  z_ratio = rho * p["z_fvc"] + np.sqrt(1 - rho**2) * p["z_other"]
  fvc_true = reference.from_z(lms["FVC"], p["z_fvc"]) * np.exp(-values["fvc_effect"] * severity)
  ratio_true = np.minimum(MAX_RATIO, reference.from_z(lms["FEV1FVC"], z_ratio)) * np.exp(
      -values["ratio_effect"] * severity)
  ratio_lln = reference.lln(lms["FEV1FVC"])
  copd = (severity > values["copd_severity"]) & (ratio_true < ratio_lln)

  pef_predicted, pef_lln = reference.pef_reference(sex, age, height, ethnicity)
  z_fev1 = reference.to_z(lms["FEV1"], fvc_true * ratio_true)
  z_pef = (values["pef_correlation"] * z_fev1
           + np.sqrt(1 - values["pef_correlation"]**2) * p["pef_z"])
  pef_target = pef_predicted + (pef_predicted - pef_lln) / 1.645 * z_pef
  healthy_ratio = np.minimum(MAX_RATIO, ratio_true * np.exp(values["ratio_effect"] * severity))
  healthy_fvc = fvc_true * np.exp(values["fvc_effect"] * severity)
  curvature = (healthy_curvature(pef_target / healthy_fvc, healthy_ratio)
               + values["curvature_effect"] * severity)
  rise = RISE * np.exp(values["effort_sd"] * p["rise_z"])
  time = np.arange(samples) * spirogram.SAMPLE_SECONDS
  modulation = np.exp(values["effort_noise"] * _jitter(p["jitter"]))
  coughs = p["cough_u"] < values["cough"]
  early = p["stop_u"] < values["early_termination"]
  volume_time = np.empty((total, samples))
  for i in range(total):
    m = modulation[i] * _cough(time, p["cough_time"][i]) if coughs[i] else modulation[i]
    table = spirogram.exhalation_table(curvature[i], rise[i], TAIL)
    natural = spirogram.natural_duration(table, ratio_true[i])
    stop = 1.5 + p["stop_fraction"][i] * max(0.0, natural - 1.5) if early[i] else np.inf
    volume_time[i], _ = spirogram.expiration(fvc_true[i], ratio_true[i], table, m, stop)
  if values["volume_resolution"] > 0:
    # levels / (1 / step), not levels * step: for 1 mL this is mL / 1000 bit for bit, as the
    # UK Biobank reader computes it, so both give the same flow–volume curves.
    volume_time = np.round(volume_time / values["volume_resolution"]) / (
        1 / values["volume_resolution"])
  grid_volume = values["grid_volume"] if values["grid"] == "absolute" else None
  flow_volume = np.stack([spirogram.flow_volume(v, spirogram.GRID_POINTS, grid_volume)
                          for v in volume_time])
  measured = _stack([spirogram.measures(v) for v in volume_time])

  labels = np.where(copd, p["label_u"] >= values["underdiagnosis"],
                    p["label_u"] < values["false_positive_rate"])
  hospital_p = special.expit(values["hospital_intercept"]
                             + values["hospital_severity"] * severity + 0.3 * (age - 55) / 10)
  hazard = np.exp(values["mortality_severity"] * severity
                  + values["mortality_age"] * (age - 55) / 10 + 0.3 * sex)
  death = values["survival_scale"] * (p["death"] / hazard) ** (1 / values["survival_shape"])
  censor = np.minimum(values["follow_up"], p["dropout"] / values["dropout_rate"]
                      if values["dropout_rate"] > 0 else np.inf)
  split = (np.arange(total) >= values["train_individuals"]).astype(np.int32)
  out = {
      "flow_volume": flow_volume.astype(np.float32),
      "volume_time": volume_time.astype(np.float32),
      "label": labels.astype(np.int32), "copd": copd.astype(np.int32),
      **{k: measured[k].astype(np.float32) for k in ("fev1", "fvc", "ratio", "pef")},
      "lln": ratio_lln.astype(np.float32),
      "fev1_predicted": lms["FEV1"][1].astype(np.float32),
      "age": age.astype(np.float32), "height": height.astype(np.float32),
      "pack_years": p["pack_years"].astype(np.float32),
      "severity": severity.astype(np.float32),
      "survival_time": np.minimum(death, censor).astype(np.float32),
      "sex": sex.astype(np.int32), "ancestry": group.astype(np.int32),
      "hospitalised": (p["hospital_u"] < hospital_p).astype(np.int32),
      "event": (death <= censor).astype(np.int32),
      "individual": np.arange(total, dtype=np.int32),
      "genotypes": genotypes, "causal": causal, "effects": effects,
      "snp_frequencies": ancestral, "group_frequencies": by_group,
      "genetic_score": score, "liability": liability,
      "fev1_true": fvc_true * ratio_true, "fvc_true": fvc_true, "ratio_true": ratio_true,
      "pef_predicted": pef_predicted, "pef_lln": pef_lln, "curvature": curvature,
      "cough": coughs.astype(np.int32), "early_stop": early.astype(np.int32),
      "split": split,
  }
  return out


def fields(values: dict) -> dict[str, Field]:
  out = {"flow_volume": Field((spirogram.GRID_POINTS, 1), "float32")}
  if values["volume_time"]:
    samples = int(round(values["duration"] / spirogram.SAMPLE_SECONDS))
    out["volume_time"] = Field((samples, 1), "float32")
  categories = {"label": ("no COPD", "COPD"), "copd": ("no COPD", "COPD"),
                "sex": ("female", "male"),
                "ancestry": reference.ETHNICITIES[:len(values["ancestry_proportions"])]}
  for name in EXAMPLE_FIELDS:
    integer = name in INTEGER_FIELDS
    out[name] = Field((), "int32" if integer else "float32", categories.get(name, ()))
  return out


def dataset(arrays: dict[str, np.ndarray], values: dict) -> Dataset:
  """The training Dataset of `cohort`'s arrays (train persons, then test persons)."""
  described = fields(values)
  examples = {k: arrays[k] for k in EXAMPLE_FIELDS}
  examples["flow_volume"] = arrays["flow_volume"][..., None]
  if values["volume_time"]:
    examples["volume_time"] = arrays["volume_time"][..., None]
  train = arrays["split"] == 0
  task = Task("classification", ("flow_volume",), "label", 2, groups=("sex",))
  return Dataset(ArraySplit({k: v[train] for k, v in examples.items()}),
                 ArraySplit({k: v[~train] for k, v in examples.items()}),
                 described, task, name=NAME)


def load(data_config) -> Dataset:
  values = settings(data_config)
  return dataset(cohort(values), values)
