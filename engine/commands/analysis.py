"""`retracer cluster` (HYDRA Table 4 label-error clustering) and `retracer agreement` (a fast
estimator against exact SGD-Influence, HYDRA Figs. 3-5)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from engine.commands.output import add_json_flag, json_out, print_saved, progress_bar


def _f(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def cmd_cluster(a: argparse.Namespace) -> int:
    from engine.analysis.clustering import cluster_label_errors

    res = cluster_label_errors(
        a.run_dir,
        method=a.method,
        m=a.m,
        seed=a.seed,
        exact=a.exact,
        dim=a.dim,
        progress=progress_bar(a, f"cluster ({a.method})"),
    )
    if json_out(a, res):
        return 0
    print(
        f"{a.method}: signs of contributions to {res['m']} validation samples, 2-means per given class; "
        f"flagged {len(res['flagged_ids'])} of {res['n_train']} training samples"
    )
    print(
        f"{'class':<16}{'n':>6}{'flagged':>9}{'flipped':>9}{'J(flagged,flipped)':>20}{'J(rest,clean)':>15}"
    )
    for r in res["classes"]:
        print(
            f"{str(r['name'])[:15]:<16}{r['n']:>6}{r['n_flagged']:>9}{_f(r['n_flipped'], 'd'):>9}"
            f"{_f(r['jaccard_flipped']):>20}{_f(r['jaccard_clean']):>15}"
        )
    if res["known_errors"]:
        print(
            f"overall: Jaccard(flagged, flipped) {_f(res['jaccard_flipped'])}, Jaccard(rest, clean) "
            f"{_f(res['jaccard_clean'])}; class means {_f(res['mean_class_jaccard_flipped'])} / "
            f"{_f(res['mean_class_jaccard_clean'])}; precision {_f(res['precision'])}, recall {_f(res['recall'])}"
        )
    else:
        print("the run has no known label errors (manifest 'flipped'), so no Jaccard index")
    return 0


def cmd_agreement(a: argparse.Namespace) -> int:
    from engine.analysis.agreement import agreement

    res = agreement(
        a.run_dir,
        fast=a.fast,
        exact=a.exact,
        query=a.query,
        n_samples=a.samples,
        seed=a.seed,
        progress=progress_bar(a, "sensitivities"),
    )
    if json_out(a, res):
        return 0
    print(
        f"{a.fast} vs {a.exact} (query {a.query}, {res['n']} training samples): sign errors "
        f"{res['sign_error_rate']:.3f}, Spearman {res['spearman']:.3f}, Pearson {res['pearson']:.3f}, "
        f"top-10% overlap {res['top10_overlap']:.2f}"
    )
    if res["steps"]:
        ep, err, norm = res["epochs"], res["error_mean"], res["exact_norm_mean"]
        print(f"d theta_t / d w_k for {len(res['sample_ids'])} training samples (mean over them):")
        print(f"{'epoch':>8}{'||exact - fast||':>18}{'||exact||':>12}{'relative':>10}")
        for i in sorted(
            {int(round(x)) for x in range(0, len(ep), max(1, len(ep) // 8))} | {len(ep) - 1}
        ):
            print(f"{ep[i]:>8.2f}{err[i]:>18.4g}{norm[i]:>12.4g}{_f(res['relative_error'][i]):>10}")
    print_saved(res)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "cluster",
        help="flag suspected label errors by 2-means on the signs of validation contributions (HYDRA Table 4)",
    )
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--method", default="hydra", help="hydra | tracin | sgd-influence | sgd-influence-last"
    )
    p.add_argument(
        "--m", type=int, default=1000, help="validation samples (capped at the split's size)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--exact",
        action="store_true",
        help="adjoint pass with M queries instead of the projected store",
    )
    p.add_argument("--dim", type=int, default=2048, help="projection dimension of the store")
    add_json_flag(p, "engine.analysis.clustering.cluster_label_errors's result")
    p.set_defaults(func=cmd_cluster)

    q = sub.add_parser(
        "agreement",
        help="a fast estimator against exact sgd-influence: sign errors, Spearman, d theta/d w error",
    )
    q.add_argument("--run-dir", required=True)
    q.add_argument("--fast", default="hydra", help="hydra | sgd-influence-last | tracin")
    q.add_argument("--exact", default="sgd-influence")
    q.add_argument("--query", default="val", help="val | class | test:ID (score comparison)")
    q.add_argument(
        "--samples",
        type=int,
        default=20,
        help="training points followed in parameter space (0: none)",
    )
    q.add_argument("--seed", type=int, default=0)
    add_json_flag(q, "engine.analysis.agreement.agreement's result")
    q.set_defaults(func=cmd_agreement)
