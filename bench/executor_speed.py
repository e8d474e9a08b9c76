"""The same 16-retrain fan-out inline, on the local process pool and on a local Ray, side by side.

    .venv/bin/python bench/executor_speed.py [--retrains 16] [--workers N] [--no-ray]

Trains the demo run (the bundled sample, engine.sample_data.demo_spec), then runs `--retrains`
fresh retrains of it (seeds 1.., 5% of the training images removed: what a proof or a
noise-bench row does) through engine.executor three ways: inline (one process), the local pool
(`--workers`, default one per core) and Ray (ray.init on this machine, one CPU per task). Checks
that all three return the same metrics, and prints each wall time (the pool's and Ray's first
fan-out, which starts their workers, and a second, warm one), the speed-up over inline and the
speed-up per worker. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _fan_out(run: Path, n: int) -> list[Any]:
    from engine import tasks
    from engine.loading import load_run
    from engine.tasks import changes_of

    loaded = load_run(run)
    drop = list(range(0, len(loaded.bundle.train), 20))  # 5% of the images
    return [tasks.retrain("fresh", changes_of(drop), seed=1 + s) for s in range(n)]


def _timed(ex: Any, run: Path, jobs: list[Any]) -> tuple[float, list[Any]]:
    t = time.perf_counter()
    got = ex.map(run, jobs)
    return time.perf_counter() - t, got


def main() -> None:
    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.executor import ExecutorSettings, default_workers, make_executor
    from engine.sample_data import demo_spec
    from engine.train import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retrains", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args()
    workers = a.workers or default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo"
        data, cfg = demo_spec()
        train(run, DataSpec.from_dict(data), TrainConfig.from_dict(cfg))
        jobs = _fan_out(run, a.retrains)
        rows: dict[str, dict[str, float]] = {}
        t_inline, ref = _timed(make_executor(ExecutorSettings("local", workers=1)), run, jobs)
        rows["inline"] = {"workers": 1, "cold_s": t_inline, "warm_s": t_inline}
        pool = make_executor(ExecutorSettings("local", workers=workers))
        cold, got = _timed(pool, run, jobs)
        warm, got2 = _timed(pool, run, jobs)
        assert got == ref and got2 == ref, "the local pool's results differ from inline"
        rows["local pool"] = {"workers": workers, "cold_s": cold, "warm_s": warm}
        if not a.no_ray:
            import ray

            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            ex = make_executor(ExecutorSettings("ray"))
            cold, got = _timed(ex, run, jobs)
            warm, got2 = _timed(ex, run, jobs)
            assert got == ref and got2 == ref, "Ray's results differ from inline"
            rows["ray (local)"] = {"workers": workers, "cold_s": cold, "warm_s": warm}
            ray.shutdown()
    print(f"{a.retrains} fresh retrains of the demo run ({os.cpu_count()} cores here); "
          "every executor returned the same metrics")  # fmt: skip
    print(
        f"{'executor':<12} {'workers':>7} {'cold s':>8} {'warm s':>8} {'speed-up':>9} {'per worker':>10}"
    )
    for name, r in rows.items():
        up = t_inline / r["warm_s"]
        r["speedup"], r["speedup_per_worker"] = up, up / r["workers"]
        print(f"{name:<12} {r['workers']:>7} {r['cold_s']:>8.2f} {r['warm_s']:>8.2f} "
              f"{up:>8.2f}x {up / r['workers']:>9.2f}x")  # fmt: skip
    print(json.dumps({"retrains": a.retrains, "rows": rows}))


if __name__ == "__main__":
    main()
