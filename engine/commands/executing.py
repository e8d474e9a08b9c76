"""The executor flags of the commands that retrain many times (engine.executor)."""

from __future__ import annotations

import argparse

from engine.executor import EXECUTORS, ExecutorSettings, current_settings

__all__ = ["add_executor_flags", "settings_from_args"]


def add_executor_flags(p: argparse.ArgumentParser) -> None:
    """--executor, --workers, --ray-address (defaults: $RETRACER_EXECUTOR, $RETRACER_WORKERS,
    $RETRACER_RAY_ADDRESS, else local with one worker per core)."""
    g = p.add_argument_group("where the retrains run")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="local: processes on this machine (default); ray: a Ray cluster (pip install 'retracer[ray]')",
    )
    g.add_argument(
        "--workers", type=int, default=None,
        help="local worker processes (default: one per core; 1 runs every retrain in this process)",
    )  # fmt: skip
    g.add_argument(
        "--ray-address",
        default=None,
        help="the Ray cluster to join, e.g. 10.0.0.1:6379 (implies --executor ray; default "
        "$RETRACER_RAY_ADDRESS, else a Ray started on this machine)",
    )


def settings_from_args(a: argparse.Namespace) -> ExecutorSettings | None:
    """The settings the flags ask for (over the environment's), None when the command has none."""
    if not hasattr(a, "executor"):
        return None
    base = current_settings()
    kind = a.executor or ("ray" if a.ray_address else base.kind)
    return ExecutorSettings(
        kind=kind,
        workers=a.workers if a.workers is not None else base.workers,
        address=a.ray_address or (base.address if kind == "ray" else None),
    ).validate()
