"""`ensemble`: a method's scores averaged over a few training runs that differ only in their seed.

What a user's retrain changes is not only this run's trajectory: a fresh retrain starts from new
initial weights and a new batch order. Scores of one run describe that run; averaging the scores
of K runs trained on the same data with K seeds estimates the expected effect over seeds, which is
what a fresh-seed proof measures (TRAK's ensembles, Park et al. 2023). Measured on the demo run
(BENCHMARKS.md, "Linear datamodeling score"): influence-function averaged over 5 runs reaches a
fresh-seed LDS of .52 at alpha = 0.5 (one run: .41; EK-FAC: .46).

The extra runs are trained once with the run's data and config (seed = the run's + 100 + k) under
``<run>/ensemble/seed-<s>/`` and reused; each run's scores are divided by their standard deviation
before averaging (runs differ in scale), so the output keeps the sign convention (NEGATIVE =
HARMFUL) but not the base method's units.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from engine.config import ConfigError
from engine.influence.registry import METHODS, register_method
from engine.options import option
from engine.progress import Progress

if TYPE_CHECKING:
    from engine.influence.queries import Query
    from engine.loading import LoadedRun

__all__ = ["EnsembleOptions", "ensemble_runs", "ensemble_scores"]

SEED_OFFSET = 100


@dataclass(frozen=True)
class EnsembleOptions:
    base: str = option(
        "influence-function", help="the method whose scores are averaged (not a composite one)"
    )
    runs: int = option(5, help="training runs averaged, this one included (>= 1)")


def ensemble_runs(loaded: LoadedRun, runs: int) -> list[LoadedRun]:
    """This run and runs - 1 others trained on the same data with other seeds (trained once,
    then reused); each sees the labels a person checked in this run (engine.trusted)."""
    from engine.config import TrainConfig
    from engine.loading import load_run
    from engine.runs import RunDir
    from engine.train import train
    from engine.trusted import TRUSTED_FILE

    out = [loaded]
    for k in range(1, runs):
        seed = loaded.cfg.seed + SEED_OFFSET + k
        d = loaded.run.file("ensemble", f"seed-{seed}")
        cfg = replace(loaded.cfg, seed=seed)
        done = (d / "config.json").is_file() and RunDir(d).status.get("state") == "done"
        if not (done and TrainConfig.from_dict(RunDir.open(d).config["train"]) == cfg):
            shutil.rmtree(d, ignore_errors=True)
            d.parent.mkdir(parents=True, exist_ok=True)
            train(d, loaded.data, cfg)
        trusted = loaded.run.file(TRUSTED_FILE)
        if trusted.is_file():
            shutil.copyfile(trusted, d / TRUSTED_FILE)
        else:
            (d / TRUSTED_FILE).unlink(missing_ok=True)
        out.append(load_run(d))
    return out


@register_method(
    "ensemble",
    description="A method's scores averaged over a few runs trained with other seeds (default: "
    "influence-function over 5 runs); for what fresh-seed retrains will show",
    options=EnsembleOptions(),
)
def ensemble_scores(
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    base: str = "influence-function",
    runs: int = 5,
) -> np.ndarray:
    """(N_train, Q): the mean over the runs of the base method's scores, each divided by its
    standard deviation (NEGATIVE = HARMFUL)."""
    spec = METHODS.get(base)
    if spec is None or spec.composite or base == "ensemble":
        raise ConfigError(f"base must be a plain method (not {base!r})", param="base")
    if not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"runs must be a positive integer, got {runs!r}", param="runs")
    parts: list[np.ndarray] = []
    members = ensemble_runs(loaded, runs)
    for i, member in enumerate(members):
        s = np.asarray(spec.fn(member, query, progress=None, **spec.defaults), dtype=np.float64)
        s = s[:, None] if s.ndim == 1 else s
        sd = s.std(axis=0, keepdims=True)
        parts.append(s / np.where(sd > 0, sd, 1.0))
        if progress is not None:
            progress(i + 1, len(members), None)
    return np.mean(parts, axis=0)
