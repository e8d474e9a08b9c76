"""The retrains that experiments fan out (engine.executor), as small specs a worker can run.

A task is ``retrain_task(run_dir, **spec)``: the worker opens the run (engine.loading.open_run,
cached while the run is unchanged), retrains it as the spec says and returns only what the
experiment measures. Specs hold training-split indices, seeds and names, never tensors.

``retrain(...)`` builds the Task of one retrain; ``describe`` names it for errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from engine.changes import Changes
from engine.config import ConfigError
from engine.counterfactual import counterfactual, evaluate_theta, query_values, validation_metrics
from engine.executor import Task
from engine.fresh import train_fresh
from engine.loading import LoadedRun, open_run
from engine.threads import pinned_threads
from engine.trajectory import Params

__all__ = ["HOWS", "MEASURES", "changes_of", "retrain", "retrain_task", "spec_of"]

HOWS = ("all", "last", "fresh")
MEASURES = ("metrics", "query", "validation")


def changes_of(
    drop: Sequence[int] | np.ndarray = (), relabel: Sequence[Sequence[int]] = ()
) -> Changes | None:
    """Changes from training indices to drop and (index, new class) pairs; None for no change."""
    if not len(drop) and not len(relabel):
        return None
    pairs = np.asarray(relabel, dtype=np.int64).reshape(-1, 2)
    return Changes(
        torch.as_tensor(np.sort(np.asarray(drop, dtype=np.int64)), dtype=torch.int64),
        torch.as_tensor(pairs[:, 0], dtype=torch.int64),
        torch.as_tensor(pairs[:, 1], dtype=torch.int64),
    )


def spec_of(changes: Changes | None) -> dict[str, Any]:
    """The drop / relabel part of a task spec for `changes` (plain int lists)."""
    if changes is None:
        return {"drop": [], "relabel": []}
    return {
        "drop": changes.drop.tolist(),
        "relabel": [
            [int(i), int(c)]
            for i, c in zip(changes.relabel_idx.tolist(), changes.relabel_to.tolist(), strict=True)
        ],
    }


def _weights(loaded: LoadedRun, how: str, ch: Changes | None, **spec: Any) -> Params:
    if how == "fresh":
        if spec.get("seed") is None:
            raise ConfigError("a fresh retrain needs a seed", param="seed")
        return train_fresh(
            loaded, seed=int(spec["seed"]), changes=ch, budget=str(spec.get("budget", "steps"))
        )
    if how not in HOWS:
        raise ConfigError(f"how must be one of {', '.join(HOWS)}, got {how!r}", param="how")
    empty = Changes(*(torch.zeros(0, dtype=torch.int64) for _ in range(3)))
    return counterfactual(
        loaded, ch or empty, mode=how, renormalise=bool(spec.get("renormalise", False))
    )


def retrain_task(
    run_dir: str,
    *,
    how: str,
    drop: Sequence[int] = (),
    relabel: Sequence[Sequence[int]] = (),
    measure: str = "metrics",
    seed: int | None = None,
    budget: str = "steps",
    renormalise: bool = False,
    query: str = "val",
    test_ids: Sequence[str] = (),
    subsets: Mapping[str, Sequence[int]] | None = None,
) -> Any:
    """Retrain the run at run_dir and measure it.

    how: all | last (engine.counterfactual, `renormalise` its option) | fresh (`seed`, `budget`;
    engine.fresh). drop: training indices; relabel: [index, new class] pairs.
    measure: "metrics" -> engine.counterfactual.evaluate_theta's dict; "query" -> the (Q,) list
    of query_values(query, test_ids); "validation" -> validation_metrics on `subsets`.
    """
    if measure not in MEASURES:
        raise ConfigError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    loaded = open_run(run_dir)
    with pinned_threads(loaded.cfg.threads):  # the measurement too: the same bits everywhere
        theta = _weights(
            loaded, how, changes_of(drop, relabel), seed=seed, budget=budget,
            renormalise=renormalise,
        )  # fmt: skip
        if measure == "metrics":
            return evaluate_theta(loaded, theta)
        if measure == "query":
            return query_values(loaded, theta, query, list(test_ids)).tolist()
        return validation_metrics(loaded, theta, subsets or {})


def describe(how: str, changes: Changes | None, seed: int | None = None) -> str:
    """A task's name in words, e.g. "fresh retrain (seed 3) without 96 samples"."""
    what = "fresh retrain" if how == "fresh" else f"counterfactual retrain ({how})"
    if seed is not None:
        what += f" (seed {seed})"
    if changes is None or not (changes.n_drop or changes.n_relabel):
        return what + " on all the data"
    parts = [f"without {changes.n_drop} samples"] if changes.n_drop else []
    parts += [f"with {changes.n_relabel} relabelled"] if changes.n_relabel else []
    return f"{what} {' and '.join(parts)}"


def retrain(
    how: str, changes: Changes | None = None, *, seed: int | None = None, **spec: Any
) -> Task:
    """The Task of one retrain (retrain_task's keywords in `spec`)."""
    return Task(
        retrain_task,
        {"how": how, "seed": seed, **spec_of(changes), **spec},
        describe(how, changes, seed),
    )
