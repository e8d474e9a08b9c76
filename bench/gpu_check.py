"""Retracer on CUDA next to the CPU: the same run, replay, every influence method and a retrain.

    .venv/bin/python bench/gpu_check.py [--dataset digits|fashion-mnist] [--n-train 2000]

Without a CUDA device it prints one line saying so and exits 0 (the last line is JSON with
"skipped": true). With one, on deterministic settings (``torch.use_deterministic_algorithms``,
``CUBLAS_WORKSPACE_CONFIG=:4096:8``, set before CUDA starts):

1. trains LeNet-5 on the CPU and on CUDA, and checks that each replays bit-exactly on its own
   device (``retracer verify``);
2. opens the CPU-trained run on CUDA (a copy whose config says cuda) and compares every
   method's scores on the same logged trajectory with the CPU's: Spearman and the largest
   difference relative to the largest score (tolerance: Spearman >= 0.99, relative <= 1e-3 in
   float32; replay across devices drifts in the last bits, so equality is not expected);
3. a counterfactual retrain (drop 20 images) on each device: validation loss on both.

Times are printed side by side with their CPU / CUDA ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402

METHODS = ("hydra", "tracin", "sgd-influence", "sgd-influence-last", "loss", "margin")
TOLERANCE = {"spearman": 0.99, "relative": 1e-3}


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def on_device(run: Path, copy: Path, device: str) -> Path:
    """A copy of run whose config trains / replays on `device`."""
    shutil.copytree(run, copy)
    conf = json.loads((copy / "config.json").read_text())
    conf["train"]["device"] = device
    (copy / "config.json").write_text(json.dumps(conf))
    return copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument(
        "--against", default="cuda",
        help="the second device (cpu: a dry run of this script's comparisons without a GPU)",
    )  # fmt: skip
    a = ap.parse_args()
    if a.against == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: gpu_check skipped")
        print(json.dumps({"skipped": True}))
        return
    torch.use_deterministic_algorithms(True)
    from scipy.stats import spearmanr

    from engine.changes import resolve_changes
    from engine.config import TrainConfig
    from engine.counterfactual import validation_metrics
    from engine.data import DataSpec
    from engine.influence.methods import run_method
    from engine.influence.queries import Query
    from engine.loading import load_run
    from engine.retrain import counterfactual
    from engine.train import train
    from engine.verify import verify_replay

    data = DataSpec(dataset=a.dataset, n_train=a.n_train, seed=0)
    other = a.against
    gpu = torch.cuda.get_device_name(0) if other.startswith("cuda") else other
    out: dict[str, Any] = {"device": gpu}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        runs = {}
        for dev in ("cpu", other):
            cfg = TrainConfig(model="lenet5", epochs=a.epochs, lr=0.05, device=dev)
            res, sec = timed(lambda cfg=cfg, dev=dev: train(root / dev, data, cfg))
            rep = verify_replay(root / dev)
            runs[dev] = root / dev
            out[f"train_{dev}_s"], out[f"replay_exact_{dev}"] = res.seconds, bool(rep["exact"])
            print(f"train on {dev}: {res.seconds:.1f} s (wall {sec:.1f} s), "
                  f"replay on {dev} {'bit-exact' if rep['exact'] else 'NOT exact'}", flush=True)  # fmt: skip
            if dev == other:  # the dry run: one CPU run
                break
        cross = on_device(runs["cpu"], root / "cpu-on-other", other)
        loaded = {"cpu": load_run(runs["cpu"]), other: load_run(cross)}
        out["methods"] = {}
        for m in METHODS:
            got = {}
            for dev, lr in loaded.items():
                got[dev], out_s = timed(lambda lr=lr, m=m: run_method(m, lr, Query("val"))[:, 0])
                out.setdefault("seconds", {}).setdefault(m, {})[dev] = out_s
            a_, b_ = np.asarray(got["cpu"], float), np.asarray(got[other], float)
            rel = float(np.abs(a_ - b_).max() / max(np.abs(a_).max(), 1e-30))
            rho = float(spearmanr(a_, b_).statistic)
            ok = rho >= TOLERANCE["spearman"] and rel <= TOLERANCE["relative"]
            s = out["seconds"][m]
            out["methods"][m] = {"spearman": rho, "relative": rel, "within": ok}
            print(f"{m:<20} cpu {s['cpu']:.2f} s  {other} {s[other]:.2f} s  ({s['cpu'] / s[other]:.1f}x)  "
                  f"spearman {rho:.4f}  max rel diff {rel:.1e}  {'ok' if ok else 'OUT OF TOLERANCE'}",
                  flush=True)  # fmt: skip
        for dev, lr in loaded.items():
            drop = lr.bundle.train.ids[:20]
            theta, sec = timed(
                lambda lr=lr, drop=drop: counterfactual(lr, resolve_changes(lr, drop))
            )
            val = validation_metrics(lr, theta, {"all": torch.arange(len(lr.bundle.val)).tolist()})
            out[f"retrain_{dev}"] = {"seconds": sec, "val_loss": val["all"]["val_loss"]}
            print(f"retrain without 20 on {dev}: {sec:.2f} s, validation loss "
                  f"{val['all']['val_loss']:.6f}", flush=True)  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
