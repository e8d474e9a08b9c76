"""LDS of curvature variants of the exact pass, on the cached single-model ground truth of a run.

    .venv/bin/python bench/lds_variants.py --run-dir R [--subsets 100]

Runs `retracer lds`'s ground truth (cached in R/lds, so after `retracer lds` it retrains
nothing), then scores each variant of sgd-influence (hessian_scale rho, exact_epochs K,
last_epochs K) and hydra, and prints the LDS at 1% / 10% / 50% removed. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from engine.experiments.lds import ground_truth, lds_score, subset
from engine.influence.methods import run_method
from engine.influence.queries import Query
from engine.loading import load_run

FRACTIONS = (0.01, 0.1, 0.5)
VARIANTS: list[tuple[str, dict[str, Any]]] = (
    [("sgd-influence", {})]
    + [("sgd-influence", {"hessian_scale": r}) for r in (0.95, 0.9, 0.75, 0.5)]
    + [("sgd-influence", {"last_epochs": k}) for k in (1, 3)]
    + [("sgd-influence", {"exact_epochs": 1})]
    + [("hydra", {})]
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--subsets", type=int, default=100)
    a = ap.parse_args()
    loaded = load_run(a.run_dir)
    truth, retrains = ground_truth(loaded, list(FRACTIONS), a.subsets)
    print(f"{retrains} new ground-truth retrains")
    out = []
    for method, opts in VARIANTS:
        s = run_method(method, loaded, Query("val"), **opts)[:, 0]
        row = [
            lds_score(
                truth[f], np.array([[s[subset(loaded, f, j)].sum()] for j in range(a.subsets)])
            )
            for f in FRACTIONS
        ]
        out.append(
            {
                "method": method,
                "options": opts,
                "lds": dict(zip(map(str, FRACTIONS), row, strict=True)),
            }
        )
        print(
            f"{method:<16}{json.dumps(opts):<28}" + "".join(f"{v:+.3f}  " for v in row), flush=True
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
