"""Studies: sweeps and closed-form fits over trained runs, each resumable from one results log.

Library modules: `results` (the results log keyed by a config fingerprint), `runs` (train a
config once, resume it if preempted).
"""
