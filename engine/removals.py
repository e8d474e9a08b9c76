"""The retrains a recommendation is measured by (engine.recommend), planned first and run as one
fan-out on the current executor: the removals of each method's top k, the random controls, and
the run itself, judged on validation halves."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine import tasks
from engine.counterfactual import validation_metrics
from engine.executor import Task, current_executor
from engine.loading import LoadedRun
from engine.progress import Progress
from engine.tasks import changes_of

__all__ = ["Removals", "random_picks", "random_summary"]


def random_picks(loaded: LoadedRun, k: int, draws: int) -> list[np.ndarray]:
    """`draws` sets of k random training indices (sorted), seeded by the run, k and the draw."""
    n = len(loaded.bundle.train)
    return [
        np.sort(
            np.random.default_rng([loaded.cfg.seed, 104_729, k, d]).choice(n, size=k, replace=False)
        )
        for d in range(draws)
    ]


def random_summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The random draws' mean (and std) change, and each draw."""
    out: dict[str, Any] = {"draws": runs}
    for m in ("d_val_loss", "d_val_acc"):
        v = [r[m] for r in runs]
        out[m], out[f"{m}_std"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return out


class Removals:
    """The retrains a recommendation is measured by, asked for first and run in one fan-out
    (engine.executor): mode "all" one renormalised counterfactual per removal (none for the run
    itself), mode "fresh" one retrain per fresh seed."""

    def __init__(
        self,
        loaded: LoadedRun,
        *,
        mode: str,
        fresh_seeds: list[int],
        judges: dict[str, torch.Tensor],
    ) -> None:
        self.loaded, self.mode, self.fresh_seeds = loaded, mode, fresh_seeds
        self.judges = {h: idx.tolist() for h, idx in judges.items()}
        self.per_removal = len(fresh_seeds) if mode == "fresh" else 1
        self._tasks: list[Task] = []
        self._slots: list[list[int] | None] = []  # per removal: its task indices (None: the run)
        self._got: list[Any] = []
        self._run_itself: dict[str, dict[str, float]] | None = None  # the run, evaluated once

    @property
    def n_tasks(self) -> int:
        return len(self._tasks)

    def ask(self, idx: np.ndarray | None) -> int:
        """A removal of training indices idx (None: nothing removed); returns its handle."""
        ch = None if idx is None else changes_of(idx)
        if self.mode == "fresh":
            new = [tasks.retrain("fresh", ch, seed=s, measure="validation", subsets=self.judges)
                   for s in self.fresh_seeds]  # fmt: skip
        elif ch is None:
            new = []
        else:
            new = [tasks.retrain("all", ch, renormalise=True, measure="validation",
                                 subsets=self.judges)]  # fmt: skip
        self._slots.append(
            list(range(len(self._tasks), len(self._tasks) + len(new))) if new else None
        )
        self._tasks += new
        return len(self._slots) - 1

    def run(self, progress: Progress | None) -> None:
        self._got = current_executor().map(self.loaded.run.path, self._tasks, progress=progress)

    def judged(self, handle: int, judge: str) -> dict[str, float]:
        """{"val_loss", "val_acc"} after the removal, on the validation images `judge` (a, b,
        all), the mean over fresh seeds."""
        slot = self._slots[handle]
        if slot is None:
            if self._run_itself is None:
                self._run_itself = validation_metrics(
                    self.loaded, self.loaded.final_theta, self.judges
                )
            got = [self._run_itself]
        else:
            got = [self._got[i] for i in slot]
        return {m: float(np.mean([g[judge][m] for g in got])) for m in ("val_loss", "val_acc")}
