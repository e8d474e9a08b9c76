"""`retracer backdoor-bench`: plant a backdoor, find the poisoned images with every method, remove, retrain."""

from __future__ import annotations

import argparse
import sys

from engine.commands.executing import add_executor_flags
from engine.commands.output import add_json_flag, json_out, print_saved, print_skipped, progress_bar


def run_backdoor_bench(a: argparse.Namespace) -> int:
    from engine.commands.training import data_spec_from_args, train_config_from_args
    from engine.experiments.backdoor_bench import backdoor_bench, format_table

    data, cfg = data_spec_from_args(a), train_config_from_args(a)
    tag = data.dataset.replace(":", "_").replace("/", "_")
    run_dir = a.run_dir or (
        f"runs/backdoor-bench/{tag}-{cfg.model}-{str(data.backdoor).replace(':', 'to')}"
        f"-{data.trigger}{data.backdoor_rate:g}-s{data.seed}"
    )
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None

    def log(msg: str) -> None:
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    res = backdoor_bench(
        data=data,
        cfg=cfg,
        run_dir=run_dir,
        methods=methods,
        seeds=a.seeds,
        overwrite=a.overwrite,
        progress=progress_bar(a, "backdoor-bench retrains"),
        log=log,
    )
    if json_out(a, res):
        return 0
    print_skipped(res)
    print(
        f"{data.dataset}, {cfg.model}, backdoor {data.backdoor} (trigger {data.trigger}, "
        f"{data.backdoor_rate:g} of the class), target {res['target_class']}; run {res['run_dir']}"
        f"{' (reused)' if res['run_reused'] else ''}; top {res['n_poisoned']} removed, retrained "
        f"fresh for {res['n_steps']} steps with {len(res['fresh_seeds'])} seed(s); "
        f"attack success on {res['n_attack']} watermarked test images"
    )
    print(format_table(res))
    print(f"best: {res['best']}")
    print_saved(res)
    print(f"total {res['seconds']:.0f}s")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from engine.commands.training import add_data_args, add_train_args

    p = sub.add_parser(
        "backdoor-bench",
        help="plant a backdoor, find the poisoned images with every method, remove them and retrain",
        description=(
            "Trains with --backdoor a:b (a trigger stamped on a fraction of class-a training images "
            "relabelled b), ranks the training set with ITLM, every influence method (query: the "
            "loss of the watermarked test images), loss and confident learning, and reports "
            "precision/recall of finding the poisoned images and clean accuracy / attack success "
            "after removing the top n and retraining fresh."
        ),
    )
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(backdoor="1:7")
    p.add_argument("--methods", default=None, help="comma-separated (default: all of them)")
    p.add_argument("--seeds", type=int, default=3, help="fresh retrains per row (mean ± std)")
    p.add_argument("--run-dir", default=None, help="default: runs/backdoor-bench/<dataset>-...")
    p.add_argument("--overwrite", action="store_true", help="retrain the run if it differs")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_json_flag(p, "engine.experiments.backdoor_bench.backdoor_bench's result (rows, best, path)")
    add_executor_flags(p)
    p.set_defaults(func=run_backdoor_bench)
