"""Where the projected store's build time goes, next to training, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/store_build.py [--n-train 6000] [--dim 2048]
        [--run-dir RUN]

Trains LeNet-5 one epoch (float32, CPU, one torch thread) on a Fashion-MNIST subset (the
bundled digits if the Debian package is missing, and says so), or takes the stored run RUN (any
model; its own training time is the ratio's base), then replays the run the way
engine.influence.featurestore.project_phi does and times its two parts separately: the replay
with per-sample gradients (engine.influence.selfinfluence.window_grads) and the SRHT projection
of those gradients, and the peak resident memory above the level before the replay. Prints each
as a ratio to the training time; last line JSON. To compare two versions of the engine side by
side, run it with PYTHONPATH set to each checkout in turn.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import PeakRSS, train_with_fallback


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--run-dir", type=Path, help="a stored run to replay instead of training one")
    a = ap.parse_args()
    torch.set_num_threads(1)

    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.influence.projection import make_projector
    from engine.influence.selfinfluence import window_grads
    from engine.loading import load_run

    with tempfile.TemporaryDirectory() as tmp:
        note = ""
        if a.run_dir is not None:
            loaded = load_run(a.run_dir)
            train_seconds, dataset = float(loaded.run.status["seconds"]), loaded.data.dataset
        else:
            cfg = TrainConfig(
                model="lenet5", epochs=1, batch_size=32, lr=0.05, dtype="float32", device="cpu"
            )
            spec = DataSpec(
                dataset=a.dataset, n_train=a.n_train, n_test=200, val_fraction=0.02, seed=0
            )
            res, spec, note = train_with_fallback(Path(tmp) / "r", spec, cfg)
            loaded = load_run(Path(tmp) / "r")
            train_seconds, dataset = res.seconds, spec.dataset
        n_params = sum(t.numel() for t in loaded.final_theta.values())
        projector = make_projector(n_params, a.dim)
        t_grads = t_proj = 0.0
        with PeakRSS() as mem:
            it = window_grads(loaded, start=0)
            while True:
                t0 = time.perf_counter()
                try:
                    _, _, g = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                projector.project(g)
                t_grads, t_proj = t_grads + t1 - t0, t_proj + time.perf_counter() - t1
    out = {
        "dataset": dataset,
        "model": loaded.cfg.model,
        "n_train": len(loaded.bundle.train),
        "params": n_params,
        "dim": a.dim,
        "train_seconds": train_seconds,
        "replay_and_grads_seconds": t_grads,
        "projection_seconds": t_proj,
        "build_over_training": (t_grads + t_proj) / train_seconds,
        "peak_mb": mem.peak_mb,
        "note": note,
    }
    print(
        f"{out['model']} on {out['n_train']} images of {dataset}: training {train_seconds:.2f}s; "
        f"store build {t_grads + t_proj:.2f}s "
        f"({out['build_over_training']:.2f}x): replay + per-sample gradients {t_grads:.2f}s, "
        f"projection {t_proj:.2f}s; peak +{mem.peak_mb:.0f} MB{'; ' + note if note else ''}"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
