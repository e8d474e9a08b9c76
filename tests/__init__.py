"""Retracer's tests (a regular package, so a third-party top-level `tests` package, such as
the one kronfluence 1.0.1 installs, cannot shadow `tests.*` imports)."""
