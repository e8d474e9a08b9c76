"""`retracer retrain`, `cleanse`, `noise-bench`, `trust`: prove (or disprove) influence by retraining."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.commands.executing import add_executor_flags
from engine.commands.output import add_json_flag, json_out, print_saved, print_skipped, progress_bar


def read_id_file(path: str) -> list[str]:
    """Sample ids from a file: one per line, or a CSV with a sample_id column."""
    from engine.config import ConfigError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--drop file {path} does not exist")
    lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if lines and "sample_id" in [c.strip() for c in lines[0].split(",")]:
        import pandas as pd

        ids = [str(s) for s in pd.read_csv(p, dtype={"sample_id": str})["sample_id"].dropna()]
        if not ids:
            raise ConfigError(f"--drop file {path} has a sample_id column but no ids")
        return ids
    if any("," in ln for ln in lines):
        raise ConfigError(f"{path}: a CSV needs a sample_id column (or give one id per line)")
    if not lines:
        raise ConfigError(f"--drop file {path} is empty: list one sample id per line")
    return lines


def read_relabel_file(path: str, class_names: list[str]) -> dict[str, int]:
    """CSV sample_id,label -> {id: class index}; label is a class index or a class name."""
    import pandas as pd

    from engine.config import ConfigError

    if not Path(path).is_file():
        raise FileNotFoundError(f"--relabel file {path} does not exist")
    df = pd.read_csv(path, dtype=str)
    if not {"sample_id", "label"} <= set(df.columns):
        raise ConfigError(f"{path}: the relabel CSV needs the columns sample_id,label")
    out: dict[str, int] = {}
    for sid, lab in zip(df["sample_id"], df["label"], strict=True):
        lab = str(lab).strip()
        if lab in class_names:
            out[str(sid)] = class_names.index(lab)
        elif lab.lstrip("-").isdigit():
            out[str(sid)] = int(lab)
        else:
            raise ConfigError(
                f"{path}: label {lab!r} for {sid} is neither a class index nor one of {class_names}"
            )
    return out


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _group_line(name: str, g: Mapping[str, Any] | None) -> str:
    if not g:
        return f"{name:<8} -"
    s = g["summary"]
    sd = lambda m: f" ± {s[m]['std'] * 100:.2f}" if s[m]["n"] > 1 else ""  # noqa: E731
    return (
        f"{name:<8} test acc {_pct(s['test_acc']['mean'])}{sd('test_acc')}  val acc {_pct(s['val_acc']['mean'])}"
        f"  test loss {s['test_loss']['mean']:.4f}  val loss {s['val_loss']['mean']:.4f}  (n = {s['test_acc']['n']})"
    )


def run_retrain(a: argparse.Namespace) -> int:
    from engine.loading import load_run
    from engine.retrain import retrain

    loaded = load_run(a.run_dir)
    drop = read_id_file(a.drop) if a.drop else []
    relabel = read_relabel_file(a.relabel, loaded.bundle.class_names) if a.relabel else None
    res = retrain(
        loaded,
        drop=drop,
        relabel=relabel,
        mode=a.mode,
        seeds=a.seeds,
        control=None if a.control == "none" else a.control,
        control_draws=a.control_draws,
        budget=a.budget,
        progress=progress_bar(a, "retrain"),
    )
    if json_out(a, res):
        return 0
    print(
        f"retrained ({a.mode}) without {res['n_drop']} and relabelling {res['n_relabel']} samples in {res['seconds']:.1f}s"
    )
    print(_group_line("before", res["before"]))
    print(_group_line("after", res["after"]))
    print(_group_line("control", res["control_runs"]))
    print(res["verdict"])
    print(f"saved -> {res['path']}")
    return 0


def _csv_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def run_cleanse(a: argparse.Namespace) -> int:
    from engine.config import ConfigError
    from engine.experiments.cleanse import cleanse

    try:
        remove = [int(x) for x in _csv_list(a.remove)]
    except ValueError as e:
        raise ConfigError(f"--remove must be comma-separated counts, got {a.remove!r}") from e
    res = cleanse(
        a.run_dir,
        methods=_csv_list(a.methods),
        remove=remove,
        mode=a.mode,
        seeds=a.seeds,
        random_draws=a.random_draws,
        budget=a.budget,
        progress=progress_bar(a, "cleanse"),
    )
    if json_out(a, res):
        return 0
    print_skipped(res)
    b = res["before"]
    print(
        f"before removal: test error {_pct(b['mean'])}"
        + (f" ± {b['std'] * 100:.2f}" if b["n"] > 1 else "")
    )
    print(
        f"{'method':<22}{'m':>5}{'test error':>14}{'± std':>8}{'vs random':>11}{'p':>8}{'paired p':>10}"
    )
    fp = lambda p: "" if p is None or p != p else f"{p:.3f}"  # noqa: E731
    for r in res["summary"]:
        print(
            f"{r['method']:<22}{r['m']:>5}{_pct(r['test_error_mean']):>14}{r['test_error_std'] * 100:>8.2f}"
            f"{r['diff_vs_random'] * 100:>+10.2f}{fp(r['p_vs_random']):>8}{fp(r.get('paired_p_vs_random')):>10}"
        )
    print(res["conclusion"])
    print_saved(res)
    return 0


def run_noise_bench(a: argparse.Namespace) -> int:
    from engine.commands.training import data_spec_from_args, train_config_from_args
    from engine.experiments.noise_bench import format_table, noise_bench

    data, cfg = data_spec_from_args(a), train_config_from_args(a)
    run_dir = (
        a.run_dir
        or f"runs/noise-bench/{data.dataset.replace(':', '_').replace('/', '_')}-{cfg.model}-{data.noise_kind}{data.noise:g}-s{data.seed}"
    )
    res = noise_bench(
        data=data,
        cfg=cfg,
        run_dir=run_dir,
        methods=_csv_list(a.methods) if a.methods else None,
        seeds=a.seeds,
        budget=a.budget,
        overwrite=a.overwrite,
        recommend={"mode": a.recommend_mode, "objective": a.recommend_objective},
        progress=progress_bar(a, "noise-bench retrains"),
    )
    if json_out(a, res):
        return 0
    print_skipped(res)
    print(
        f"{data.dataset}, {cfg.model}, {res['n_train']} training samples, {res['n_flipped']} flipped "
        f"({data.noise:.0%} {data.noise_kind}); run {res['run_dir']}{' (reused)' if res['run_reused'] else ''}; "
        f"test accuracy after removing the top {res['n_flipped']} and retraining with {len(res['fresh_seeds'])} fresh seed(s)"
    )
    print(format_table(res["rows"]))
    print(f"total {res['seconds']:.0f}s")
    print_saved(res)
    return 0


def run_trust(a: argparse.Namespace) -> int:
    from engine.experiments.trust import trust

    res = trust(
        a.run_dir, method=a.method, k=a.k, seed=a.seed, progress=progress_bar(a, "trust retrains")
    )
    if json_out(a, res):
        return 0
    print(f"{'sample':<16}{'group':<9}{'score':>12}{'true change':>14}")
    for r in res["samples"]:
        print(f"{r['sample_id']:<16}{r['group']:<9}{r['predicted']:>12.3g}{r['actual']:>14.3g}")
    print(
        f"Kendall's tau {res['kendall_tau']:.3f} (p = {res['kendall_p']:.3g}), Spearman {res['spearman']:.3f}, "
        f"Pearson {res['pearson']:.3f}, sign agreement {res['sign_agreement']:.2f}"
    )
    print(res["verdict"])
    print_saved(res)
    return 0


def add_budget_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget",
        default="steps",
        choices=["steps", "epochs"],
        help="fresh retrains: keep the run's number of SGD steps (default; more epochs on fewer "
        "samples) or its number of epochs (fewer steps)",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "retrain", help="retrain without (or relabelling) samples, against a random control"
    )
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--drop",
        default=None,
        help="file: one sample id per line, or a CSV with a sample_id column",
    )
    p.add_argument(
        "--relabel", default=None, help="CSV with columns sample_id,label (class index or name)"
    )
    p.add_argument("--mode", default="all", choices=["all", "last", "fresh"])
    p.add_argument("--seeds", type=int, default=3, help="fresh seeds (mode fresh only)")
    p.add_argument("--control", default="random", choices=["random", "none"])
    p.add_argument(
        "--control-draws", type=int, default=3, help="random control retrains (modes all / last)"
    )
    add_json_flag(p, "engine.retrain.retrain's result (engine.retrain.RetrainResult)")
    add_budget_flag(p)
    add_executor_flags(p)
    p.set_defaults(func=run_retrain)

    p = sub.add_parser(
        "cleanse", help="remove the top-m harmful per method, retrain, plot test error vs m"
    )
    p.add_argument("--run-dir", required=True)
    p.add_argument(
        "--methods", default="sgd-influence,sgd-influence-last,hydra,influence-function,loss,random"
    )
    p.add_argument("--remove", default="1,3,10,30,100,300", help="counts m to remove")
    p.add_argument("--mode", default="all", choices=["all", "last", "fresh"])
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="modes all/last: base runs with seeds run+0..S-1; fresh: fresh seeds",
    )
    p.add_argument(
        "--random-draws",
        type=int,
        default=3,
        help="random removals per base run (modes all / last)",
    )
    add_budget_flag(p)
    add_json_flag(
        p, "engine.experiments.cleanse.cleanse's result (summary, before, conclusion, path)"
    )
    add_executor_flags(p)
    p.set_defaults(func=run_cleanse)

    from engine.commands.training import add_data_args, add_train_args

    p = sub.add_parser(
        "noise-bench", help="inject label noise, rank with every method, clean and retrain"
    )
    add_data_args(p)
    add_train_args(p)
    # an annealed schedule: a constant-lr final iterate varies so much between seeds (std ~0.05 on
    # digits) that even removing exactly the flipped labels did not measurably help
    p.set_defaults(model="lenet5", noise=0.2, schedule="cosine", lr=0.05)
    p.add_argument(
        "--methods", default=None, help="comma-separated (default: every registered method)"
    )
    p.add_argument("--seeds", type=int, default=5, help="fresh retrains per row (mean ± std)")
    add_budget_flag(p)
    p.add_argument(
        "--run-dir", default=None, help="where the noisy run is trained (reused if identical)"
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--recommend-mode", default="all", choices=["all", "fresh"],
        help="how the recommended row measures the candidates on validation (retracer recommend)",
    )  # fmt: skip
    p.add_argument("--recommend-objective", default="acc", choices=["acc", "loss"])
    add_json_flag(p, "engine.experiments.noise_bench.noise_bench's result (rows, n_flipped, path)")
    add_executor_flags(p)
    p.set_defaults(func=run_noise_bench)

    p = sub.add_parser("trust", help="compare a method's scores with true leave-one-out retrains")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--float64",
        action="store_true",
        help="retrain in float64 (no float32 rounding in the truth)",
    )
    add_json_flag(
        p, "engine.experiments.trust.trust's result (samples, kendall_tau, verdict, path)"
    )
    add_executor_flags(p)
    p.set_defaults(func=run_trust)
