"""`retracer fidelity`: estimators against true leave-one-out (Hara et al. 2019, Sec. 7.1)."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import TYPE_CHECKING

from engine.commands.executing import add_executor_flags
from engine.commands.output import add_json_flag, print_json

if TYPE_CHECKING:
    from engine.backbone import BackboneSpec


def run_fidelity_cmd(a: argparse.Namespace) -> int:
    from engine.config import ConfigError
    from engine.experiments.fidelity import run_fidelity

    if a.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {a.seeds}")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None

    def log(msg: str) -> None:
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # CG's indefinite-Hessian note on the dnn
        res = run_fidelity(
            a.model,
            seeds=a.seeds,
            methods=methods,
            work_dir=a.work_dir,
            log=log,
            optimizer=getattr(a, "optimizer", "sgd"),
            standardize=getattr(a, "inputs", "standardized") == "standardized",
            backbone=_backbone(a),
        )
    summary = res.summary()
    if a.json:
        keys = ("kendall", "kendall_std", "jaccard", "jaccard_std")
        out = {
            m: (
                {k: row[k] for k in keys}
                if "kendall" in row
                else {"error": row.get("error", "no result")}
            )
            for m, row in summary.items()
        }
        print_json(out)
        return 0
    print(
        f"fidelity on digits 1 vs 7 (200 train, 160 validation), model {a.model}, {a.seeds} seed(s)"
        + f", {getattr(a, 'inputs', 'standardized')} inputs"
        + (f", optimizer {a.optimizer}" if getattr(a, "optimizer", "sgd") != "sgd" else "")
        + (f", head mode on {a.backbone} features" if a.backbone else "")
    )
    print(f"{'method':<22} {'kendall tau':>16} {'jaccard (10+10)':>18} {'seconds':>8}")
    for m, row in summary.items():
        if "kendall" not in row:
            print(f"{m:<22} failed: {row.get('error', '')}")
            continue
        tau = f"{row['kendall']:.3f} ± {row['kendall_std']:.3f}"
        jac = f"{row['jaccard']:.3f} ± {row['jaccard_std']:.3f}"
        print(f"{m:<22} {tau:>16} {jac:>18} {row['seconds']:>8.2f}")
    return 0


def _backbone(a: argparse.Namespace) -> BackboneSpec | None:
    from engine.backbone import BackboneSpec

    if not a.backbone:
        return None
    return BackboneSpec(a.backbone, a.backbone_weights, a.backbone_size)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "fidelity",
        help="Kendall tau / Jaccard of every method against true leave-one-out (Hara et al. Sec. 7.1)",
        description=(
            "Trains the Sec. 7.1 protocol on digits 1 vs 7 (float64, one sigmoid output) for each seed, "
            "computes the true leave-one-out change of the validation loss for every training sample by "
            "counterfactual SGD, and compares each method's scores with it."
        ),
    )
    p.add_argument("--model", required=True, choices=["logreg", "dnn"])
    p.add_argument(
        "--seeds",
        type=int,
        default=10,
        help="number of seeds (0..S-1); each changes split, init, batches",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods, each optionally with options, e.g. influence-function:damping=1 (default: every method that uses the query)",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="keep the run directories here (default: a temporary folder)",
    )
    add_json_flag(p, '{method: {"kendall", "kendall_std", "jaccard", "jaccard_std"} or {"error"}}')
    p.add_argument(
        "--backbone", default="",
        help="head mode: run the protocol on this frozen backbone's features (see retracer train)",
    )  # fmt: skip
    p.add_argument("--backbone-weights", default="", help="the backbone's weights file")
    p.add_argument("--backbone-size", type=int, default=0, help="resize before the backbone")
    p.add_argument("--quiet", action="store_true", help="no per-seed lines on stderr")
    p.add_argument(
        "--optimizer",
        default="sgd",
        choices=["sgd", "adam", "adamw"],
        help="train the protocol with SGD (the paper's) or Adam / AdamW at lr 0.01",
    )
    p.add_argument(
        "--inputs",
        default="standardized",
        choices=["standardized", "raw"],
        help="standardized: per-pixel StandardScaler on the training split, as the authors' code "
        "(default); raw: pixels in [0, 1]",
    )
    add_executor_flags(p)
    p.set_defaults(func=run_fidelity_cmd)
