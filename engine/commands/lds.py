"""`retracer lds`: the linear datamodeling score of methods on a run (engine.experiments.lds)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.executing import add_executor_flags
from engine.commands.output import add_json_flag, print_json, print_saved, progress_bar

CEILING = "additive ceiling"  # the row (and JSON key) of --ceiling; not a method name


def run_lds(a: argparse.Namespace) -> int:
    from engine.experiments.lds import lds

    res = lds(
        a.run_dir,
        methods=[m.strip() for m in a.methods.split(",") if m.strip()],
        fractions=[f.strip() for f in a.fraction.split(",") if f.strip()],
        subsets=a.subsets,
        setting=a.setting,
        seeds=a.seeds,
        query=a.query,
        n_test=a.n_test,
        progress=progress_bar(a, "lds ground truth"),
        ceiling=a.ceiling,
    )
    rows: dict[str, dict[str, dict[str, Any]]] = {
        m: {f: {"lds": c["lds"], "ci": c["ci"]} for f, c in row.items()}
        for m, row in res["methods"].items()
    }
    if "ceiling" in res:
        rows[CEILING] = {f: {"lds": c["r_max"], "ci": c["ci"]} for f, c in res["ceiling"].items()}
    if a.json:
        print_json(rows)
        return 0
    what = (
        "mean validation loss"
        if res["query"] == "val"
        else f"{len(res['test_ids'])} test images' losses"
    )
    how = (
        "same start and batches"
        if res["setting"] == "single"
        else f"{res['seeds']} fresh seed(s) per subset"
    )
    print(f"LDS ({res['setting']}: {how}; query {what}; {res['subsets']} random subsets per fraction; "
          f"{res['retrains']} new ground-truth retrains, {res['seconds']:.1f}s)")  # fmt: skip
    width = max(22, *(len(m) + 2 for m in rows))
    print(f"{'method':<{width}}" + "".join(f"{'drop ' + f:>22}" for f in res["fractions"]))
    for m, row in rows.items():
        cells = [
            f"{row[f]['lds']:+.2f} [{row[f]['ci'][0]:+.2f}, {row[f]['ci'][1]:+.2f}]"
            if f in row
            else "-"
            for f in res["fractions"]
        ]
        print(f"{m:<{width}}" + "".join(f"{c:>22}" for c in cells))
    if "ceiling" in res:
        print(f"{CEILING}: the best LDS any sum of per-sample scores can reach here (the part of "
              "a group's effect that is additive; retracer lds --help)")  # fmt: skip
    print_saved(res)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "lds",
        help="linear datamodeling score: do the scores predict what removing random groups does?",
        description="Retrain without random subsets of the training set (cached in the run), predict "
        "each change as the sum of the removed samples' scores, and report Spearman's correlation "
        "(LDS) with a bootstrap 95%% interval.",
    )
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--methods",
        required=True,
        help="comma-separated methods, each optionally with options (computed, not stored), "
        "e.g. sgd-influence:group_fraction=0.5",
    )
    p.add_argument("--fraction", default="0.01,0.1,0.5", help="fractions removed, comma-separated")
    p.add_argument("--subsets", type=int, default=30, help="random subsets per fraction")
    p.add_argument("--setting", default="single", help="single (counterfactual all) | fresh")
    p.add_argument("--seeds", type=int, default=3, help="fresh retrains per subset (fresh only)")
    p.add_argument("--query", default="val", help="val (mean loss) | test (per test image)")
    p.add_argument("--n-test", type=int, default=50, help="test images of the test query")
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="also retrain without unions of two subsets (subsets/2 per fraction up to 0.2) and "
        "report the additivity ceiling: the best LDS any sum of per-sample scores can reach on "
        "this run",
    )
    add_json_flag(
        p,
        '{method: {fraction: {"lds": x, "ci": [lo, hi]}}}, fractions as given; with --ceiling '
        'also "additive ceiling": {fraction: {"lds": r_max, "ci": [lo, hi]}}',
    )
    add_executor_flags(p)
    p.set_defaults(func=run_lds)
