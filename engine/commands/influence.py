"""`retracer influence` (score every training sample) and `retracer influencers` (one test sample)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.output import add_json_flag, print_json, progress_bar


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "influence",
        help="score every training sample's influence on a query (negative = harmful)",
        description="Retrace the logged trajectory and write R/influence/<method>/<query>/scores.csv. "
        "score = estimated change of the query loss if the sample is removed; negative = harmful.",
    )
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--method",
        default="sgd-influence",
        help="sgd-influence | sgd-influence-last | hydra | tracin | ...",
    )
    p.add_argument(
        "--query", default="val", help="val | class | self | test:ID[,ID...] (default val)"
    )
    p.add_argument("--last-epochs", type=int, default=None, help="retrace only the last K epochs")
    p.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="a method option (repeatable); `retracer methods` lists each method's options",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true", help="replace scores made with other parameters"
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep scores already stored with the same parameters (after a killed job: compute only what is missing)",
    )
    p.add_argument("--top", type=int, default=10, help="how many of the most harmful ids to print")
    add_json_flag(
        p,
        '{"run_dir", "method", "query", "n", "columns", "column", "most_harmful": [{"sample_id", "score"}]}',
    )
    p.set_defaults(func=cmd_influence)

    m = sub.add_parser("methods", help="list the influence methods, their options and defaults")
    add_json_flag(
        m, '{"methods": [{"name", "description", "uses_query", "hessian_free", "options"}]}'
    )
    m.set_defaults(func=cmd_methods)

    q = sub.add_parser(
        "influencers",
        help="the most harmful and most helpful training samples for one test sample",
    )
    q.add_argument("--run-dir", required=True)
    q.add_argument("--test-id", required=True)
    q.add_argument("--method", default="hydra")
    q.add_argument("--k", type=int, default=10)
    q.add_argument(
        "--exact", action="store_true", help="run the adjoint pass instead of the projected store"
    )
    q.add_argument("--dim", type=int, default=2048, help="projection dimension of the store")
    add_json_flag(
        q, '{"test_id", "method", "exact", "rows": [{"sample_id", "score", "rank", "kind"}]}'
    )
    q.set_defaults(func=cmd_influencers)


def cmd_influence(a: argparse.Namespace) -> int:
    from engine.influence.api import compute_influence
    from engine.influence.methods import get_method
    from engine.options import parse_assignments

    spec = get_method(a.method)
    options = parse_assignments(type(spec.options), a.option, what="option")
    if a.last_epochs is not None:
        options["last_epochs"] = a.last_epochs
    bar = progress_bar(a, f"{a.method} ({a.query})")
    frame = compute_influence(
        a.run_dir,
        a.method,
        query=a.query,
        progress=bar,
        overwrite=a.overwrite,
        skip_existing=a.skip_existing,
        **options,
    )
    col = "score" if "score" in frame.columns else frame.columns[1]
    worst = frame.nsmallest(a.top, col)
    if a.json:
        print_json({
            "run_dir": a.run_dir, "method": a.method, "query": a.query, "n": len(frame),
            "columns": list(frame.columns[1:]), "column": col,
            "most_harmful": [{"sample_id": i, "score": s} for i, s in zip(worst["sample_id"], worst[col], strict=True)],
        })  # fmt: skip
        return 0
    print(f"wrote {a.run_dir}/influence/{a.method}/ ({len(frame)} samples; negative = harmful)")
    print(f"{a.top} most harmful by {col!r}:")
    for sid, s in zip(worst["sample_id"], worst[col], strict=True):
        print(f"  {sid}\t{s:+.6g}")
    return 0


def cmd_methods(a: argparse.Namespace) -> int:
    from engine.influence.methods import get_method, method_names, method_options

    rows: list[dict[str, Any]] = [
        {"name": m, "description": get_method(m).description, "uses_query": get_method(m).uses_query,
         "hessian_free": get_method(m).hessian_free, "options": method_options(m)}
        for m in method_names()
    ]  # fmt: skip
    if a.json:
        print_json({"methods": rows})
        return 0
    for r in rows:
        print(f"{r['name']}: {r['description']}")
        for o in r["options"]:
            choices = f" ({' | '.join(o['choices'])})" if o["choices"] else ""
            print(f"    {o['name']}={o['default']!r}{choices}  {o['help']}")
    return 0


def cmd_influencers(a: argparse.Namespace) -> int:
    from engine.influence import api

    frame = api.test_influencers(
        a.run_dir, a.test_id, method=a.method, k=a.k, exact=a.exact, dim=a.dim
    )
    if a.json:
        print_json(
            {
                "test_id": a.test_id,
                "method": a.method,
                "exact": a.exact,
                "rows": frame.to_dict("records"),
            }
        )
        return 0
    for kind in ("harmful", "helpful"):
        part = frame[frame["kind"] == kind]
        print(f"most {kind} for {a.test_id} ({a.method}{', exact' if a.exact else ', projected'}):")
        for sid, s, r in zip(part["sample_id"], part["score"], part["rank"], strict=True):
            print(f"  {r:>6}  {sid}\t{s:+.6g}")
    return 0
