"""jaxml: an accelerator-first JAX/Flax experiment framework."""

__version__ = "0.1.0"
