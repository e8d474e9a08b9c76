"""The logged optimisation trajectory of a run: per-step records, checkpoints, and replay.

On disk, under ``<run>/trajectory/``::

    meta.json                  n_steps, steps_per_epoch, checkpoint steps, parameter names
    steps.safetensors          batch_index (int64, concatenated), batch_offsets (T+1,),
                               lr (float64, T), aug_seed (int64, T), epoch (int64, T)
    ckpt-00000000.safetensors  theta.<name> and v.<name> (momentum buffer) at that step

Step t moves theta_t to theta_{t+1} using batch S_t = batch_index[offsets[t]:offsets[t+1]].
A checkpoint "at step t" holds (theta_t, v_t), the state *before* step t runs; the last one is at
step T (the final weights). Storage is O((T/K) P) for a checkpoint every K steps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.runs import RunError, atomic_save_tensors, atomic_write_json, load_tensors, read_json

Params = dict[str, torch.Tensor]


@dataclass
class StepLog:
    """Per-step records accumulated in memory while training."""

    batches: list[torch.Tensor] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    aug_seeds: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)

    def append(self, batch: torch.Tensor, lr: float, aug_seed: int, epoch: int) -> None:
        self.batches.append(batch.to(torch.int64).cpu())
        self.lrs.append(float(lr))
        self.aug_seeds.append(int(aug_seed))
        self.epochs.append(int(epoch))

    def __len__(self) -> int:
        return len(self.lrs)

    def tensors(self) -> dict[str, torch.Tensor]:
        sizes = torch.tensor([0] + [len(b) for b in self.batches], dtype=torch.int64)
        return {
            "batch_index": torch.cat(self.batches)
            if self.batches
            else torch.zeros(0, dtype=torch.int64),
            "batch_offsets": torch.cumsum(sizes, 0),
            "lr": torch.tensor(self.lrs, dtype=torch.float64),
            "aug_seed": torch.tensor(self.aug_seeds, dtype=torch.int64),
            "epoch": torch.tensor(self.epochs, dtype=torch.int64),
        }

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], n: int | None = None) -> StepLog:
        off = t["batch_offsets"]
        total = len(t["lr"]) if n is None else n
        log = cls()
        for i in range(total):
            log.append(
                t["batch_index"][off[i] : off[i + 1]],
                float(t["lr"][i]),
                int(t["aug_seed"][i]),
                int(t["epoch"][i]),
            )
        return log


def ckpt_name(step: int) -> str:
    return f"ckpt-{step:08d}.safetensors"


class TrajectoryWriter:
    """Writes checkpoints and the step log during training, each file atomically."""

    def __init__(self, folder: str | Path, *, steps_per_epoch: int, n_steps: int) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.steps_per_epoch = steps_per_epoch
        self.n_steps = n_steps
        self.log = StepLog()
        self.checkpoints: list[int] = []

    def checkpoint(self, step: int, theta: Params, v: Params) -> None:
        """Save (theta_step, v_step) and the steps logged so far; then update meta.json."""
        if len(self.log) != step:
            raise RuntimeError(f"checkpoint at step {step} but {len(self.log)} steps are logged")
        tensors = {f"theta.{k}": p for k, p in theta.items()}
        tensors.update({f"v.{k}": b for k, b in v.items()})
        atomic_save_tensors(self.folder / ckpt_name(step), tensors)
        atomic_save_tensors(self.folder / "steps.safetensors", self.log.tensors())
        if step not in self.checkpoints:
            self.checkpoints.append(step)
        atomic_write_json(
            self.folder / "meta.json",
            {
                "n_steps": self.n_steps,
                "logged_steps": step,
                "steps_per_epoch": self.steps_per_epoch,
                "checkpoints": sorted(self.checkpoints),
                "params": {k: list(p.shape) for k, p in theta.items()},
            },
        )


class Trajectory:
    """Read access to a run's logged trajectory."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise RunError(f"{self.folder} holds no trajectory (meta.json missing)")
        self.meta = read_json(meta_path)
        t = load_tensors(self.folder / "steps.safetensors")
        self._batch_index = t["batch_index"]
        self._offsets = t["batch_offsets"]
        self._lr = t["lr"]
        self._aug_seed = t["aug_seed"]
        self._epoch = t["epoch"]
        self.logged_steps: int = int(self.meta["logged_steps"])
        self.n_steps: int = int(self.meta["n_steps"])
        self.steps_per_epoch: int = int(self.meta["steps_per_epoch"])
        self.checkpoints: list[int] = [int(c) for c in self.meta["checkpoints"]]
        # per-sample weights (N,) this trajectory was trained with; None: every weight 1 (the run)
        self.weights: torch.Tensor | None = None
        self._held: dict[int, tuple[Params, Params]] = {}

    def reweighted(
        self, weights: torch.Tensor, states: dict[int, tuple[Params, Params]]
    ) -> Trajectory:
        """A view of the same logged steps trained with per-sample weights (N,) instead of 1:
        its checkpoints are `states` {step: (theta, v)}, held in memory (engine.influence.walk's
        reweighted_trajectory replays them); nothing on disk changes."""
        view = copy.copy(self)
        view.weights, view._held = weights, dict(states)
        view.checkpoints = sorted(states)
        return view

    @property
    def complete(self) -> bool:
        return self.logged_steps == self.n_steps and self.n_steps in self.checkpoints

    def batch(self, t: int) -> torch.Tensor:
        """Indices (into the training split) of the batch used at step t, int64 (B_t,)."""
        return self._batch_index[self._offsets[t] : self._offsets[t + 1]]

    def lr(self, t: int) -> float:
        return float(self._lr[t])

    def aug_seed(self, t: int) -> int:
        return int(self._aug_seed[t])

    def epoch(self, t: int) -> int:
        return int(self._epoch[t])

    def epoch_start(self, epoch: int) -> int:
        """The first step of `epoch` (0-based)."""
        return epoch * self.steps_per_epoch

    def steps_of_sample(self, n_train: int) -> list[list[int]]:
        """For each training index k, the steps whose batch contains k."""
        out: list[list[int]] = [[] for _ in range(n_train)]
        for t in range(self.logged_steps):
            for k in self.batch(t).tolist():
                out[k].append(t)
        return out

    def nearest_checkpoint(self, t: int) -> int:
        """The last checkpoint at or before step t."""
        best = [c for c in self.checkpoints if c <= t]
        if not best:
            raise RunError(f"no checkpoint at or before step {t}")
        return max(best)

    def load_checkpoint(
        self, step: int, *, device: str | torch.device = "cpu"
    ) -> tuple[Params, Params]:
        """(theta_step, v_step) as dicts of tensors keyed by parameter name."""
        if step not in self.checkpoints:
            raise RunError(f"no checkpoint at step {step}; have {self.checkpoints[:5]}...")
        if step in self._held:
            th, v = self._held[step]
            return (
                {k: x.to(device, copy=True) for k, x in th.items()},
                {k: x.to(device, copy=True) for k, x in v.items()},
            )
        t = load_tensors(self.folder / ckpt_name(step))
        # copy=True: tensors read by safetensors may sit at any offset of its buffer, and some CPU
        # kernels round differently on memory that is not 64-byte aligned (seen with a 1-output
        # Linear); fresh allocations are aligned like the ones training used, so replay stays exact.
        theta = {k[6:]: v.to(device, copy=True) for k, v in t.items() if k.startswith("theta.")}
        vel = {k[2:]: v.to(device, copy=True) for k, v in t.items() if k.startswith("v.")}
        return theta, vel

    def segments(self) -> list[tuple[int, int]]:
        """Consecutive [start, stop) step ranges between checkpoints, covering 0..n_steps."""
        cps = sorted(c for c in self.checkpoints if c <= self.logged_steps)
        return [(a, b) for a, b in zip(cps[:-1], cps[1:], strict=True)]

    def storage_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())
