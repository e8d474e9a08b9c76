"""`retracer train`, `verify`, `info`."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.output import add_json_flag, json_out, print_json, progress_bar
from engine.config import TrainConfig
from engine.data import DataSpec
from engine.options import add_arguments, values_from_args
from engine.warmup import warm_run


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    add_arguments(g, DataSpec)
    g.add_argument(
        "--refuse-bad-images",
        action="store_true",
        help="fail on unreadable images instead of skipping them",
    )


def data_spec_from_args(a: argparse.Namespace) -> DataSpec:
    """The DataSpec of the parsed flags (seed: the run's --seed; skip_bad: not --refuse-bad-images)."""
    values = values_from_args(DataSpec, a)
    return DataSpec(**values, seed=a.seed, skip_bad=not a.refuse_bad_images)


def add_train_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p.add_argument_group("training"), TrainConfig)


def train_config_from_args(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**values_from_args(TrainConfig, a))


def run_train(a: argparse.Namespace) -> int:
    from engine.train import train

    data, cfg = data_spec_from_args(a), train_config_from_args(a)
    res = train(
        a.run_dir, data, cfg, overwrite=a.overwrite, progress=progress_bar(a, "train"),
        features_progress=progress_bar(a, "backbone features") if cfg.backbone else None,
        prepare_progress=progress_bar(a, "reading images")
        if data.dataset.partition(":")[0] in ("imagefolder", "csv")
        else None,
    )  # fmt: skip
    warm_run(res.run_dir)
    f = res.final
    if a.json:
        print_json(_train_result(res))
        return 0
    print(
        f"trained {cfg.model} on {data.dataset} in {res.seconds:.1f}s: "
        f"validation accuracy {f['val_acc']:.4f}, test accuracy {f['test_acc']:.4f} -> {a.run_dir}"
    )
    _report_skipped(res.run_dir)
    return 0


def _train_result(res: Any) -> dict[str, Any]:
    """{"run_dir", "seconds", "final": the last epoch's metrics, "metrics": every epoch's,
    "skipped": files left out of the data}."""
    from engine.verify import skipped_files

    return {
        "run_dir": str(res.run_dir), "seconds": res.seconds, "final": res.final,
        "metrics": res.metrics, "skipped": skipped_files(res.run_dir),
    }  # fmt: skip


def _report_skipped(run_dir: Any) -> None:
    """Print what was skipped (unreadable images, empty classes), listed in R/skipped.json."""
    from engine.verify import skipped_files

    skipped = skipped_files(run_dir)
    if skipped:
        print(f"skipped {len(skipped)} (full list in {run_dir}/skipped.json):")
        for line in skipped[:10]:
            print(f"  {line}")
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more")


def run_resume(a: argparse.Namespace) -> int:
    from engine.train import resume

    res = resume(a.run_dir, progress=progress_bar(a, "resume"))
    warm_run(res.run_dir)
    f = res.final
    if a.json:
        print_json(_train_result(res))
        return 0
    print(
        f"run complete: validation accuracy {f['val_acc']:.4f}, test accuracy {f['test_acc']:.4f} -> {a.run_dir}"
    )
    return 0


def run_verify(a: argparse.Namespace) -> int:
    from engine.verify import verify_replay

    rep = verify_replay(a.run_dir)
    if a.json:
        print_json(rep)
        return 0 if rep["exact"] else 1
    print(
        f"replayed {rep['steps']} steps from {rep['checkpoints']} checkpoints in {rep['seconds']:.1f}s: "
        f"largest difference {rep['max_abs_diff']:.3g} -> {'bit-exact' if rep['exact'] else 'NOT exact'}"
    )
    return 0 if rep["exact"] else 1


def run_info(a: argparse.Namespace) -> int:
    from engine.verify import run_info

    info = run_info(a.run_dir)
    _backdoor_info(info)
    if json_out(a, info):
        return 0
    d, t = info["config"]["data"], info["config"]["train"]
    print(
        f"run       {info['run_dir']}  ({info['status']['state']}: {info['status'].get('message', '')})"
    )
    print(
        f"data      {d['dataset']}  train/val/test {info['sizes']['train']}/{info['sizes']['val']}/{info['sizes']['test']}  classes {info['n_classes']}  flipped {info['n_flipped']}"
    )
    print(f"model     {t['model']}  {info['n_params']} parameters  {t['dtype']}")
    if info.get("backbone"):
        b = info["backbone"]
        print(
            f"head mode on frozen {b['arch']} features ({b['features']} per image) from {b['weights']}"
        )
    print(
        f"sgd       epochs {t['epochs']}  batch {t['batch_size']}  lr {t['lr']} ({t['schedule']})  momentum {t['momentum']}  weight decay {t['weight_decay']}"
    )
    if info.get("final"):
        f = info["final"]
        print(
            f"accuracy  train {f['train_acc']:.4f}  validation {f['val_acc']:.4f}  test {f['test_acc']:.4f}"
        )
    if info.get("backdoor"):
        bd, f = info["backdoor"], info.get("final") or {}
        line = f"backdoor  {bd['backdoor']} trigger {bd['trigger']}  {bd['n_poisoned']} poisoned"
        if "attack_success" in f:
            line += (
                f"  clean test acc {f['test_acc']:.4f}  attack success {f['attack_success']:.4f}"
            )
        print(line)
    print(
        f"storage   trajectory {info['trajectory_bytes'] / 1e6:.2f} MB, {len(info['checkpoints'])} checkpoints"
    )
    return 0


def _backdoor_info(info: dict[str, Any]) -> None:
    """Add info["backdoor"] = {backdoor, trigger, rate, n_poisoned} for a backdoored run."""
    d = info["config"].get("data", {})
    if not d.get("backdoor"):
        return
    import pandas as pd

    m = pd.read_csv(f"{info['run_dir']}/manifest.csv")
    info["backdoor"] = {
        "backdoor": d["backdoor"],
        "trigger": d.get("trigger", "x"),
        "rate": d.get("backdoor_rate"),
        "n_poisoned": int(m["poisoned"].sum()) if "poisoned" in m.columns else 0,
    }


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train a model with SGD, logging its trajectory")
    add_data_args(p)
    add_train_args(p)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    add_json_flag(
        p, '{"run_dir", "seconds", "final": last epoch metrics, "metrics": per epoch, "skipped"}'
    )
    p.set_defaults(func=run_train)

    p = sub.add_parser(
        "resume", help="finish a killed or interrupted training run from its last checkpoint"
    )
    p.add_argument("--run-dir", required=True)
    add_json_flag(
        p, '{"run_dir", "seconds", "final": last epoch metrics, "metrics": per epoch, "skipped"}'
    )
    p.set_defaults(func=run_resume)

    p = sub.add_parser("verify", help="replay the whole trajectory and check it is bit-exact")
    p.add_argument("--run-dir", required=True)
    add_json_flag(
        p, "engine.verify.verify_replay's report (steps, checkpoints, seconds, max_abs_diff, exact)"
    )
    p.set_defaults(func=run_verify)

    p = sub.add_parser("info", help="show a run's config, sizes, accuracies and status")
    p.add_argument("--run-dir", required=True)
    add_json_flag(p, "engine.verify.run_info (config, sizes, status, metrics, ...)")
    p.set_defaults(func=run_info)
