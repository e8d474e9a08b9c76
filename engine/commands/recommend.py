"""`retracer recommend`: which method's suggestions help this run, measured by counterfactual retrains."""

from __future__ import annotations

import argparse

from engine.commands.executing import add_executor_flags
from engine.commands.output import add_json_flag, json_out, progress_bar


def run_recommend(a: argparse.Namespace) -> int:
    from engine.config import ConfigError
    from engine.recommend import recommend, table_frame

    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    try:
        ks = [int(x) for x in a.k.split(",") if x.strip()] if a.k else None
    except ValueError as e:
        raise ConfigError(f"--k must be comma-separated integers, got {a.k!r}") from e
    res = recommend(
        a.run_dir,
        k=ks,
        methods=methods,
        objective=a.objective,
        control_draws=a.control_draws,
        label_only=a.label_only,
        mode=a.mode,
        seeds=a.seeds,
        progress=progress_bar(a, "recommend"),
    )
    if json_out(a, res):
        return 0
    t = table_frame(res)
    for c in ("d_val_loss", "vs_random_loss"):
        t[c] = t[c].map(lambda v: f"{v:+.4f}")
    for c in ("d_val_acc", "vs_random_acc"):
        t[c] = t[c].map(lambda v: f"{v * 100:+.1f}")
    how = "fresh seeds" if res["mode"] == "fresh" else "same start and batches"
    print(f"top k = {', '.join(map(str, res['ks']))} of each method removed ({how}), judged on "
          f"{res['judged_on']['n']} validation images (each by a removal whose scores never saw it); accuracy in points")  # fmt: skip
    print(t.to_string(index=False, na_rep=""))
    print(res["why"])
    if res["method"]:
        print(
            f"recommended: {res['method']} (its top {res['k']}: {', '.join(res['drop'][:5])}, ...)"
        )
    print(f"saved -> {res['path']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "recommend",
        help="measure which method's top-k removal helps this run (validation only) and pick it",
    )
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--k",
        default=None,
        help="images to remove, or several comma-separated (default: 5, 10, 15 and 20%% of the "
        "training set up to 20,000 images, else 10%%)",
    )
    p.add_argument(
        "--methods", default=None, help="comma-separated candidates (default: those cheap here)"
    )
    p.add_argument("--objective", default="acc", choices=["acc", "loss"])
    p.add_argument("--control-draws", type=int, default=3, help="random removals to compare with")
    p.add_argument(
        "--label-only",
        action="store_true",
        help="only methods that do not read the validation labels (when they may be wrong too)",
    )
    p.add_argument(
        "--mode", default="all", choices=["all", "fresh"],
        help="all: counterfactual retrains (same start and batches, deterministic); fresh: "
        "--seeds fresh retrains per removal (twice the cost per seed, closer to the proof)",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, default=2, help="fresh retrains per removal (mode fresh)")
    add_json_flag(p, "engine.recommend.recommend's result (method, k, drop, table, why)")
    add_executor_flags(p)
    p.set_defaults(func=run_recommend)
