"""Differential-privacy building blocks; each function states the guarantee it provides."""
