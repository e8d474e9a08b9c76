"""The same 16-retrain fan-out inline, on the local process pool and on a local Ray, side by side.

    .venv/bin/python bench/executor_speed.py [--retrains 16] [--workers N] [--no-ray]

Trains the demo run (the bundled sample, engine.sample_data.demo_spec), then runs `--retrains`
fresh retrains of it (seeds 1.., 5% of the training images removed: what a proof or a
noise-bench row does) through engine.executor three ways: inline (one process), the local pool
(`--workers`, default one per core) and Ray (ray.init on this machine, one CPU per task). Checks
that all three return the same metrics, and prints the time to start each pool's workers, the
first and a second fan-out on it, the speed-up of the second over inline and the speed-up per
worker. "local, first call" is what a one-shot command gets: the executor times one retrain in
the driver and starts workers only when the rest would take longer than twice their start.
The last line is JSON.
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
    from engine.executor import ExecutorSettings, LocalExecutor, default_workers, make_executor
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
        rows["inline"] = {"workers": 1, "start_s": 0.0, "cold_s": t_inline, "warm_s": t_inline}
        auto = make_executor(ExecutorSettings("local", workers=workers))
        t_auto, got = _timed(auto, run, jobs)  # no workers yet: it decides whether to start them
        assert got == ref, "the local executor's results differ from inline"
        rows["local, first call"] = {"workers": workers, "start_s": 0.0, "cold_s": t_auto,
                                     "warm_s": t_auto}  # fmt: skip
        pool = LocalExecutor(workers)
        t = time.perf_counter()
        pool.start()
        start = time.perf_counter() - t
        cold, got = _timed(pool, run, jobs)
        warm, got2 = _timed(pool, run, jobs)
        pool.close()
        assert got == ref and got2 == ref, "the local pool's results differ from inline"
        rows["local pool"] = {"workers": workers, "start_s": start, "cold_s": cold, "warm_s": warm}
        if not a.no_ray:
            import ray

            t = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            ex = make_executor(ExecutorSettings("ray"))
            start = time.perf_counter() - t
            cold, got = _timed(ex, run, jobs)
            warm, got2 = _timed(ex, run, jobs)
            assert got == ref and got2 == ref, "Ray's results differ from inline"
            rows["ray (local)"] = {"workers": workers, "start_s": start, "cold_s": cold,
                                   "warm_s": warm}  # fmt: skip
            ray.shutdown()
    print(f"{a.retrains} fresh retrains of the demo run ({os.cpu_count()} cores here); "
          "every executor returned the same metrics")  # fmt: skip
    head = ["executor", "workers", "start s", "first s", "second s", "speed-up", "per worker"]
    print(f"{head[0]:<18}" + "".join(f"{h:>11}" for h in head[1:]))
    for name, r in rows.items():
        up = t_inline / r["warm_s"]
        r["speedup"], r["speedup_per_worker"] = up, up / r["workers"]
        cells = [f"{r['workers']}", f"{r['start_s']:.2f}", f"{r['cold_s']:.2f}",
                 f"{r['warm_s']:.2f}", f"{up:.2f}x", f"{up / r['workers']:.2f}x"]  # fmt: skip
        print(f"{name:<18}" + "".join(f"{c:>11}" for c in cells))
    print(json.dumps({"retrains": a.retrains, "rows": rows}))


if __name__ == "__main__":
    main()
