"""How much does trajectory logging cost? Train the same model on the same data with and without
logging, alternating in one process, and print the ratio of median times.

    .venv/bin/python bench/logging_overhead.py [--dataset fashion-mnist] [--n-train 10000] [--epochs 2] [--repeats 3]

Target (issue 2): logging costs at most 5% more time on lenet5 / Fashion-MNIST-sized work.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import TrainConfig  # noqa: E402
from engine.data import DataError, DataSpec  # noqa: E402
from engine.train import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    spec = DataSpec(dataset=a.dataset, n_train=a.n_train, n_val=1000, n_test=1000)
    try:
        from engine.data import prepare_data

        prepare_data(spec)
    except DataError as e:
        print(f"{a.dataset} unavailable ({e}); falling back to digits")
        spec = DataSpec(dataset="digits")
    cfg = TrainConfig(
        model=a.model, epochs=a.epochs, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4
    )
    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        # the first run in a process pays one-off costs: it is not counted
        train(Path(tmp) / "warmup", spec, cfg)
        for r in range(a.repeats):
            for log in (r % 2 == 0, r % 2 != 0):  # alternate which arm goes first
                t0 = time.perf_counter()
                res = train(Path(tmp) / f"r{r}-{int(log)}", spec, cfg, log_trajectory=log)
                times[log].append(res.seconds)
                print(
                    f"repeat {r} logging={log}: {res.seconds:.2f}s (wall {time.perf_counter() - t0:.2f}s)",
                    flush=True,
                )
    with_log, without = statistics.median(times[True]), statistics.median(times[False])
    ratio = with_log / without
    print(
        f"median with logging {with_log:.2f}s, without {without:.2f}s: ratio {ratio:.3f} (target <= 1.05)"
    )
    print(
        json.dumps(
            {
                "bench": "logging_overhead",
                "dataset": spec.dataset,
                "model": a.model,
                "n_train": a.n_train,
                "epochs": a.epochs,
                "repeats": a.repeats,
                "seconds_with": with_log,
                "seconds_without": without,
                "ratio": round(ratio, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
