"""Opening a finished run for replay, retraining and influence estimation.

``load_run`` reads a run directory into a LoadedRun (data, config, problem, trajectory);
``open_run`` is the same, cached per run directory while the run's fingerprint (final
checkpoint, size, checked labels) is unchanged, for callers that open the same run many times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError, TrainConfig
from engine.data import DataBundle, DataSpec
from engine.fingerprint import Fingerprint, run_fingerprint
from engine.problem import build_problem
from engine.runs import RunDir
from engine.sgd import Problem
from engine.trajectory import Params, Trajectory
from engine.trusted import apply_trusted, load_trusted

__all__ = ["LoadedRun", "clear_open_runs", "load_run", "open_run"]


@dataclass
class LoadedRun:
    """A finished run, ready for replay: its directory, data, config, problem and trajectory."""

    run: RunDir
    bundle: DataBundle
    cfg: TrainConfig
    data: DataSpec
    problem: Problem
    traj: Trajectory

    @property
    def final_theta(self) -> Params:
        return self.traj.load_checkpoint(self.traj.n_steps, device=self.problem.x.device)[0]

    def initial_theta(self) -> Params:
        return self.traj.load_checkpoint(0, device=self.problem.x.device)[0]


def load_run(
    run_dir: str | Path, *, require_complete: bool = True, trusted: bool = True
) -> LoadedRun:
    """Open a run directory for replay, retraining and influence estimation.

    trusted: use the labels a person checked (engine.trusted.apply_trusted: the validation split
    becomes the checked images; checked test labels replace the given ones). False: as labelled.
    """
    run = RunDir.open(run_dir)
    conf = run.config
    cfg = TrainConfig.from_dict(conf["train"])
    data = DataSpec.from_dict(conf["data"])
    bundle = DataBundle.load(run.path)
    if trusted:
        bundle = apply_trusted(bundle, load_trusted(run.path))
    problem, _ = build_problem(bundle, cfg)
    traj = Trajectory(run.file("trajectory"))
    if require_complete and not traj.complete:
        state = run.status.get("state")
        raise ConfigError(
            f"run {run.path} has an incomplete trajectory ({traj.logged_steps}/{traj.n_steps} steps, "
            f"status {state}); finish or re-train it first"
        )
    return LoadedRun(run, bundle, cfg, data, problem, traj)


_OPEN: dict[str, tuple[Fingerprint, LoadedRun]] = {}


def open_run(run_dir: str | Path) -> LoadedRun:
    """load_run(run_dir), cached while the run's fingerprint is unchanged (one run at a time)."""
    key = str(Path(run_dir).resolve())
    fp = run_fingerprint(run_dir)
    hit = _OPEN.get(key)
    if hit is not None and hit[0] == fp:
        return hit[1]
    loaded = load_run(run_dir)
    _OPEN.clear()
    _OPEN[key] = (fp, loaded)
    return loaded


def clear_open_runs() -> None:
    """Forget the cached open run (the next open_run reads the directory again)."""
    _OPEN.clear()
