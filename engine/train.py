"""SGD training with trajectory logging (train) and resuming a killed run (resume)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.config import ConfigError, TrainConfig, learning_rate
from engine.data import DataBundle, DataSpec, prepare_data
from engine.models import predict
from engine.problem import (
    aug_seed_for,
    build_problem,
    epoch_batches,
    evaluate,
    split_logits,
    steps_per_epoch,
)
from engine.progress import Progress
from engine.runs import ENGINE_VERSION, RunDir, load_tensors
from engine.sgd import Problem, TrainingDiverged, sgd_step
from engine.threads import pinned_threads
from engine.trajectory import Params, StepLog, Trajectory, TrajectoryWriter


@dataclass
class TrainResult:
    run_dir: Path
    metrics: list[dict[str, Any]]
    seconds: float

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


def train(
    run_dir: str | Path,
    data: DataSpec,
    cfg: TrainConfig,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    features_progress: Progress | None = None,
    prepare_progress: Progress | None = None,
    log_trajectory: bool = True,
) -> TrainResult:
    """Prepare the data, train with SGD, log the trajectory, and write the run directory.

    prepare_progress counts the image files decoded (folder and CSV sources).
    Head mode (cfg.backbone): the frozen backbone's features of every image are computed first
    (features_progress, else progress, counts images) and stored with the data (engine.backbone).
    Raises ConfigError / DataError / BackboneError before anything is written, TrainingDiverged
    (status "failed", checkpoints kept) when the loss becomes NaN or infinite.
    """
    cfg.validate()
    bundle = prepare_data(data, progress=prepare_progress)
    cfg.validate(n_train=len(bundle.train), n_classes=bundle.n_classes)
    backbone: dict[str, Any] | None = None
    if cfg.backbone:
        from engine.backbone import attach_features, file_sha256
        from engine.problem import resolve_device

        bundle = attach_features(
            bundle, arch=cfg.backbone, weights=cfg.backbone_weights, size=cfg.backbone_size,
            device=resolve_device(cfg.device), progress=features_progress or progress,
        )  # fmt: skip
        backbone = {
            "arch": cfg.backbone,
            "weights": str(Path(cfg.backbone_weights).expanduser().resolve())
            if cfg.backbone_weights
            else "",
            "weights_sha256": file_sha256(cfg.backbone_weights) if cfg.backbone_weights else None,
            "size": cfg.backbone_size,
            "features": bundle.input_shape[0],
        }
    run = RunDir.create(run_dir, overwrite=overwrite)
    with run.lock(blocking=False):
        run.write_json(
            "config.json",
            {"data": data.to_dict(), "train": cfg.to_dict(), "engine_version": ENGINE_VERSION},
        )
        bundle.save(run.path)
        if backbone is not None:
            run.write_json("backbone.json", backbone)
        if bundle.skipped:
            run.write_json("skipped.json", bundle.skipped)
        run.set_status("running", "training")
        problem, theta = build_problem(bundle, cfg)
        try:
            return _train_loop(
                run,
                bundle,
                cfg,
                problem,
                theta,
                progress=progress,
                log_trajectory=log_trajectory,
            )
        except TrainingDiverged as e:
            msg = f"training diverged: {e}; lower --lr (now {cfg.lr}) or --momentum"
            run.set_status("failed", msg)
            raise TrainingDiverged(msg) from e
        except BaseException as e:
            run.set_status("failed", f"{type(e).__name__}: {e}")
            raise


def _checkpoint_steps(cfg: TrainConfig, spe: int) -> set[int]:
    total = cfg.epochs * spe
    steps = {e * spe for e in range(cfg.epochs + 1)}
    if cfg.checkpoint_every:
        steps |= set(range(0, total + 1, cfg.checkpoint_every))
    return steps


def _train_loop(
    run: RunDir,
    bundle: DataBundle,
    cfg: TrainConfig,
    problem: Problem,
    theta: Params,
    *,
    progress: Progress | None,
    log_trajectory: bool,
    start_step: int = 0,
    v: Params | None = None,
    writer: TrajectoryWriter | None = None,
    metrics: list[dict[str, Any]] | None = None,
) -> TrainResult:
    """Run SGD from `start_step` (0, or a checkpoint when resuming) to the end, with the run's
    pinned CPU threads (engine.threads)."""
    with pinned_threads(cfg.threads):
        t0 = time.perf_counter()
        n = len(bundle.train)
        spe = steps_per_epoch(n, cfg.batch_size)
        total = cfg.epochs * spe
        if v is None:
            v = {k: torch.zeros_like(p) for k, p in theta.items()}
        if writer is None and log_trajectory:
            writer = TrajectoryWriter(run.file("trajectory"), steps_per_epoch=spe, n_steps=total)
        ckpts = _checkpoint_steps(cfg, spe)
        metrics = list(metrics or [])
        step = start_step
        for epoch in range(start_step // spe, cfg.epochs):
            batches = epoch_batches(n, cfg.batch_size, seed=cfg.seed, epoch=epoch)
            for idx in batches[step - epoch * spe :]:
                if writer is not None and step in ckpts:
                    writer.checkpoint(step, theta, v)
                lr, aseed = learning_rate(cfg, step, spe), aug_seed_for(cfg, step)
                loss = sgd_step(problem, theta, v, idx, lr=lr, aug_seed=aseed)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"loss became {loss} at step {step} (epoch {epoch + 1})")
                if writer is not None:
                    writer.log.append(idx, lr, aseed, epoch)
                step += 1
                if progress is not None:
                    progress(step, total, loss)
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "seconds": time.perf_counter() - t0,
            }
            for s in ("train", "val", "test"):
                ev = evaluate(problem, theta, bundle.split(s))
                row[f"{s}_loss"], row[f"{s}_acc"] = ev["loss"], ev["acc"]
            if bundle.attack is not None:  # backdoor: test-2 attack success (engine.data.backdoor)
                from engine.data.backdoor import attack_metrics

                pred = predict(split_logits(problem, theta, bundle.attack))
                row.update(
                    attack_metrics(pred, bundle.attack.labels, int(bundle.attack_target or 0))
                )
            if not math.isfinite(row["train_loss"]):
                raise TrainingDiverged(
                    f"training loss is {row['train_loss']} after epoch {epoch + 1}"
                )
            metrics.append(row)
            run.write_json("metrics.json", metrics)
        if writer is not None:
            writer.checkpoint(total, theta, v)
        seconds = time.perf_counter() - t0
        run.set_status("done", f"trained {cfg.epochs} epochs in {seconds:.1f}s", seconds=seconds)
        return TrainResult(run.path, metrics, seconds)


def resume(run_dir: str | Path, *, progress: Progress | None = None) -> TrainResult:
    """Finish a run that was killed or interrupted, from its last checkpoint.

    The result is bit-identical to an uninterrupted run: batches, learning rates and augmentation
    seeds are functions of (seed, step), and the checkpoint holds theta and the momentum buffer.
    A run that is already complete is returned as it is.
    """
    run = RunDir.open(run_dir)
    conf = run.config
    cfg = TrainConfig.from_dict(conf["train"])
    bundle = DataBundle.load(run.path)
    tdir = run.file("trajectory")
    with run.lock(blocking=False):
        if not (tdir / "meta.json").exists():
            raise ConfigError(
                f"run {run.path} has no checkpoint to resume from; train it again with --overwrite"
            )
        traj = Trajectory(tdir)
        if traj.complete:
            return TrainResult(run.path, run.read_json("metrics.json", default=[]), 0.0)
        start = max(traj.checkpoints)
        problem, _ = build_problem(bundle, cfg)
        theta, v = traj.load_checkpoint(start, device=problem.x.device)
        writer = TrajectoryWriter(tdir, steps_per_epoch=traj.steps_per_epoch, n_steps=traj.n_steps)
        writer.log = StepLog.from_tensors(load_tensors(tdir / "steps.safetensors"), start)
        writer.checkpoints = list(traj.checkpoints)
        done_epochs = start // traj.steps_per_epoch
        metrics = [
            m for m in run.read_json("metrics.json", default=[]) if m["epoch"] <= done_epochs
        ]
        run.set_status("running", f"resuming from step {start}")
        try:
            return _train_loop(
                run,
                bundle,
                cfg,
                problem,
                theta,
                progress=progress,
                log_trajectory=True,
                start_step=start,
                v=v,
                writer=writer,
                metrics=metrics,
            )
        except BaseException as e:
            run.set_status("failed", f"{type(e).__name__}: {e}")
            raise
