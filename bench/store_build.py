"""Where the projected store's build time goes, next to training, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/store_build.py [--n-train 6000] [--dim 2048]

Trains LeNet-5 one epoch (float32, CPU, one torch thread) on a Fashion-MNIST subset (the
bundled digits if the Debian package is missing, and says so), then replays the run the way
engine.influence.featurestore.project_phi does and times its two parts separately: the replay
with per-sample gradients (engine.influence.selfinfluence.window_grads) and the SRHT projection
of those gradients. Prints each as a ratio to the training time; last line JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import train_with_fallback


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--dataset", default="fashion-mnist")
    a = ap.parse_args()
    torch.set_num_threads(1)

    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.influence.projection import make_projector
    from engine.influence.selfinfluence import window_grads
    from engine.loading import load_run

    cfg = TrainConfig(
        model="lenet5", epochs=1, batch_size=32, lr=0.05, dtype="float32", device="cpu"
    )
    with tempfile.TemporaryDirectory() as tmp:
        spec = DataSpec(dataset=a.dataset, n_train=a.n_train, n_test=200, val_fraction=0.02, seed=0)
        res, spec, note = train_with_fallback(Path(tmp) / "r", spec, cfg)
        loaded = load_run(Path(tmp) / "r")
        n_params = sum(t.numel() for t in loaded.final_theta.values())
        projector = make_projector(n_params, a.dim)
        t_grads = t_proj = 0.0
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
        "dataset": spec.dataset,
        "n_train": len(loaded.bundle.train),
        "params": n_params,
        "dim": a.dim,
        "train_seconds": res.seconds,
        "replay_and_grads_seconds": t_grads,
        "projection_seconds": t_proj,
        "build_over_training": (t_grads + t_proj) / res.seconds,
        "note": note,
    }
    print(
        f"training {res.seconds:.2f}s; store build {t_grads + t_proj:.2f}s "
        f"({out['build_over_training']:.2f}x): replay + per-sample gradients {t_grads:.2f}s, "
        f"projection {t_proj:.2f}s{'; ' + note if note else ''}"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
