"""The training loop and everything the runner runs around an algorithm."""
