"""Reusable UI pieces: pages orchestrate, components render, the engine computes."""
