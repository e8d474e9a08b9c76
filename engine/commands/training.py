"""`retracer train`, `verify`, `info`."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.output import add_json_flag, print_json, progress_bar
from engine.config import TrainConfig
from engine.data import DataSpec


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        default="digits",
        help="digits | fashion-mnist | mnist | cifar10 | imagefolder:PATH | csv:FILE",
    )
    g.add_argument("--data-dir", default=None, help="where the dataset's files are")
    g.add_argument(
        "--image-size", default=None, help="HxW to resize images to, e.g. 28x28 (default: inferred)"
    )
    g.add_argument(
        "--classes", default=None, help="keep these classes, e.g. 1,7 (relabelled 0..k-1)"
    )
    g.add_argument("--n-train", type=int, default=None)
    g.add_argument("--n-val", type=int, default=None)
    g.add_argument("--n-test", type=int, default=None)
    g.add_argument("--noise", type=float, default=0.0, help="fraction of training labels to flip")
    g.add_argument("--noise-kind", default="uniform", choices=["uniform", "pair"])
    g.add_argument(
        "--backdoor",
        default=None,
        metavar="A:B",
        help="plant a backdoor: stamp a trigger on some class-A training images and label them B",
    )
    g.add_argument("--trigger", default="x", choices=["x", "l"], help="the backdoor's shape")
    g.add_argument(
        "--backdoor-rate",
        type=float,
        default=0.1,
        help="fraction of the class-A training images to poison",
    )
    g.add_argument(
        "--refuse-bad-images",
        action="store_true",
        help="fail on unreadable images instead of skipping them",
    )


def data_spec_from_args(a: argparse.Namespace) -> DataSpec:
    size = None
    if a.image_size:
        from engine.data.manifest import DataError

        try:
            h, w = (int(x) for x in a.image_size.lower().split("x"))
        except ValueError as e:
            raise DataError(f"--image-size must look like 28x28, got {a.image_size!r}") from e
        size = (h, w)
    classes = None
    if a.classes:
        from engine.data.manifest import DataError

        try:
            classes = [int(c) for c in a.classes.split(",")]
        except ValueError as e:
            raise DataError(
                f"--classes must be comma-separated class numbers, got {a.classes!r}"
            ) from e
    return DataSpec(
        dataset=a.dataset,
        data_dir=a.data_dir,
        image_size=size,
        classes=classes,
        n_train=a.n_train,
        n_val=a.n_val,
        n_test=a.n_test,
        noise=a.noise,
        noise_kind=a.noise_kind,
        seed=a.seed,
        skip_bad=not a.refuse_bad_images,
        backdoor=getattr(a, "backdoor", None),
        trigger=getattr(a, "trigger", "x"),
        backdoor_rate=getattr(a, "backdoor_rate", 0.1),
    )


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--model", default=d.model, help="logreg | mlp | lenet5 | hara-cnn | cifar-cnn")
    g.add_argument("--widths", default="64,64", help="hidden widths of the mlp")
    g.add_argument("--binary", action="store_true", help="one sigmoid output (two classes only)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    g.add_argument(
        "--optimizer",
        default=d.optimizer,
        choices=["sgd", "adam", "adamw"],
        help="sgd (default) | adam (L2 in the gradient) | adamw (decoupled weight decay)",
    )
    g.add_argument("--beta1", type=float, default=d.beta1, help="Adam's first-moment decay")
    g.add_argument("--beta2", type=float, default=d.beta2, help="Adam's second-moment decay")
    g.add_argument("--eps", type=float, default=d.eps, help="Adam's epsilon")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument(
        "--schedule", default=d.schedule, help="constant | step | exp | invsqrt | cosine"
    )
    g.add_argument("--gamma", type=float, default=d.gamma)
    g.add_argument("--step-epochs", type=int, default=d.step_epochs)
    g.add_argument(
        "--augment-shift", type=int, default=0, help="random shifts up to this many pixels"
    )
    g.add_argument("--augment-flip", action="store_true", help="random horizontal flips")
    g.add_argument(
        "--standardize",
        action="store_true",
        help="standardise each pixel with the training split's mean and std (StandardScaler)",
    )
    g.add_argument("--dtype", default=d.dtype, choices=["float32", "float64"])
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="steps between checkpoints (default: each epoch)",
    )
    g.add_argument("--device", default="auto")
    g.add_argument("--seed", type=int, default=0)


def train_config_from_args(a: argparse.Namespace) -> TrainConfig:
    from engine.config import ConfigError

    try:
        widths = [int(w) for w in a.widths.split(",") if w.strip()]
    except ValueError as e:
        raise ConfigError(f"--widths must be comma-separated integers, got {a.widths!r}") from e
    return TrainConfig(
        model=a.model,
        widths=widths,
        binary=a.binary,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        momentum=a.momentum,
        weight_decay=a.weight_decay,
        schedule=a.schedule,
        gamma=a.gamma,
        step_epochs=a.step_epochs,
        augment_shift=a.augment_shift,
        augment_flip=a.augment_flip,
        dtype=a.dtype,
        seed=a.seed,
        checkpoint_every=a.checkpoint_every,
        device=a.device,
        optimizer=getattr(a, "optimizer", "sgd"),
        beta1=getattr(a, "beta1", 0.9),
        beta2=getattr(a, "beta2", 0.999),
        eps=getattr(a, "eps", 1e-8),
        standardize=getattr(a, "standardize", False),
    )


def run_train(a: argparse.Namespace) -> int:
    from engine.train import train

    data, cfg = data_spec_from_args(a), train_config_from_args(a)
    res = train(a.run_dir, data, cfg, overwrite=a.overwrite, progress=progress_bar(a, "train"))
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
    if a.json:
        print_json(info)
        return 0
    d, t = info["config"]["data"], info["config"]["train"]
    print(
        f"run       {info['run_dir']}  ({info['status']['state']}: {info['status'].get('message', '')})"
    )
    print(
        f"data      {d['dataset']}  train/val/test {info['sizes']['train']}/{info['sizes']['val']}/{info['sizes']['test']}  classes {info['n_classes']}  flipped {info['n_flipped']}"
    )
    print(f"model     {t['model']}  {info['n_params']} parameters  {t['dtype']}")
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
