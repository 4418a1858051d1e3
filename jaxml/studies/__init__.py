"""Studies: sweeps and closed-form fits over trained runs, each resumable from one results log.

`jaxml/studies/<name>.py` exposes `build(config) -> Study` (the protocol is in base.py); a
config whose top-level `study` key names it is run by `run_study`, which the runner calls.
Library modules: `results` (the results log keyed by a config fingerprint), `runs` (train a
config once, resume it if preempted), `tables` (mean ± std tables), `figures` (study plots).
"""

from jaxml.studies.base import Study, load_study, run_study

__all__ = ["Study", "load_study", "run_study"]
