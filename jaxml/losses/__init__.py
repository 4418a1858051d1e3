"""Loss functions: pure, jittable building blocks with no I/O."""
