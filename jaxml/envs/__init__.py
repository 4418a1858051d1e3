"""Environments and the building blocks that act in them (gymnax MinAtar wrappers, PPO)."""
