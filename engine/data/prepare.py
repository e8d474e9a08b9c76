"""From a source to train / validation / test splits: class subset, split, subsample, noise."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.data.manifest import DataBundle, DataError, ImageSet, Split
from engine.data.noise import inject_label_noise
from engine.data.sources import SourceOptions, load_source
from engine.options import option, options
from engine.progress import Progress


@options
@dataclass
class DataSpec:
    """Everything that decides which samples a run trains, validates and tests on.

    Sizes of None mean "all that is available"; val/test fractions apply to samples the source
    did not assign to a split.
    """

    dataset: str = option(
        "digits",
        label="Dataset",
        help="digits | fashion-mnist | mnist | cifar10 | imagefolder:PATH | csv:FILE",
    )
    data_dir: str | None = option(None, label="Data folder", help="where the dataset's files are")
    image_size: tuple[int, int] | None = option(
        None,
        label="Image size",
        hint="HxW, empty = as is",
        kind="size",
        help="HxW to resize images to, e.g. 28x28 (default: inferred)",
    )
    classes: list[int] | None = option(
        None,
        label="Classes to keep",
        hint="e.g. 1,7; empty = all",
        kind="ints",
        help="keep these classes, e.g. 1,7 (relabelled 0..k-1)",
    )
    n_train: int | None = option(None, label="Training images", hint="0 = all", minimum=0)
    n_val: int | None = option(None, label="Validation images")
    n_test: int | None = option(None, label="Test images")
    val_fraction: float = option(0.15, label="Validation fraction", cli=False)
    test_fraction: float = option(0.15, label="Test fraction", cli=False)
    noise: float = option(
        0.0,
        label="Injected label noise",
        minimum=0.0,
        maximum=0.9,
        step=0.01,
        help="fraction of training labels to flip",
    )
    noise_kind: str = option("uniform", label="Noise kind", choices=("uniform", "pair"))
    seed: int = option(0, label="Seed", cli=False)  # the CLI's --seed (TrainConfig) sets both
    skip_bad: bool = option(True, label="Skip unreadable images", cli=False)
    backdoor: str | None = option(  # "a:b": poison class a towards b (engine.data.backdoor)
        None,
        label="Backdoor",
        hint="a:b, empty = none",
        help="plant a backdoor: stamp a trigger on some class-A training images and label them B",
    )
    trigger: str = option("x", label="Trigger", choices=("x", "l"), help="the backdoor's shape")
    backdoor_rate: float = option(
        0.1,
        label="Poisoned fraction of class a",
        minimum=0.01,
        maximum=1.0,
        step=0.01,
        help="fraction of the class-A training images to poison",
    )
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        d = dict(d)
        if d.get("image_size") is not None:
            d["image_size"] = tuple(d["image_size"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def prepare_data(spec: DataSpec, *, progress: Progress | None = None) -> DataBundle:
    """Load `spec.dataset` and turn it into a DataBundle, deterministically for a given seed.
    progress counts the image files decoded (file sources)."""
    _check_spec(spec)
    opts = SourceOptions(
        data_dir=spec.data_dir, image_size=spec.image_size, skip_bad=spec.skip_bad,
        progress=progress,
    )  # fmt: skip
    src = load_source(spec.dataset, opts)
    known = known_label_errors(spec.dataset)
    src, class_names = _select_classes(src, spec.classes)
    split = _assign_splits(src, spec)
    rng = np.random.default_rng(spec.seed + 1)
    chosen: dict[str, np.ndarray] = {}
    for name, n in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)):
        idx = np.flatnonzero(split == name)
        if n is not None:
            if n > len(idx):
                raise DataError(
                    f"n_{name} {n} is larger than the {len(idx)} {name} samples available",
                    param="n_",
                )
            idx = np.sort(rng.choice(idx, size=n, replace=False))
        if len(idx) == 0:
            raise DataError(f"the {name} split is empty; use a larger dataset or other split sizes")
        chosen[name] = idx

    splits: dict[str, Split] = {}
    rows = []
    flipped_train: set[int] = set()
    poisoned_train: set[int] = set()
    for name, idx in chosen.items():
        t = torch.as_tensor(idx, dtype=torch.long)
        labels = src.labels[t].clone()
        true = labels.clone()
        ids = [src.ids[i] for i in idx]
        for j, sid in enumerate(ids):
            if sid in known:
                name_true = known[sid]
                true[j] = class_names.index(name_true) if name_true in class_names else -1
        if name == "train" and spec.noise > 0:
            labels, flipped = inject_label_noise(
                labels,
                rate=spec.noise,
                kind=spec.noise_kind,
                n_classes=len(class_names),
                seed=spec.seed,
            )
            flipped_train = set(flipped.tolist())
        images = src.images[t].contiguous()
        if name == "train" and spec.backdoor:
            images, labels, poisoned = _poison(spec, images, labels, true, len(class_names))
            poisoned_train = set(poisoned.tolist())
        splits[name] = Split(ids, images, labels)
        for j, i in enumerate(idx):
            rows.append(
                (
                    ids[j],
                    name,
                    int(labels[j]),
                    int(true[j]),
                    src.paths[i],
                    bool(labels[j] != true[j]) or (name == "train" and j in flipped_train),
                )
            )
    manifest = pd.DataFrame(
        rows, columns=["sample_id", "split", "label", "true_label", "path", "flipped"]
    )
    attack, target = None, None
    if spec.backdoor:
        from engine.data.backdoor import Backdoor, attack_set

        target = Backdoor.parse(spec.backdoor).resolve(spec.classes, len(class_names))[1]
        attack = attack_set(splits["test"], target=target, trigger=spec.trigger)[0]
        train_ids = set(splits["train"].ids)
        hit = {splits["train"].ids[j] for j in poisoned_train}
        manifest["poisoned"] = [sid in hit and sid in train_ids for sid in manifest["sample_id"]]
    return DataBundle(
        splits["train"],
        splits["val"],
        splits["test"],
        class_names,
        manifest,
        skipped=list(src.skipped),
        attack=attack,
        attack_target=target,
    )


def _poison(
    spec: DataSpec, images: torch.Tensor, labels: torch.Tensor, true: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The training split with the backdoor planted (see engine.data.backdoor.poison)."""
    from engine.data.backdoor import Backdoor, poison

    a, b = Backdoor.parse(str(spec.backdoor)).resolve(spec.classes, k)
    return poison(
        images,
        labels,
        true,
        source=a,
        target=b,
        rate=spec.backdoor_rate,
        trigger=spec.trigger,
        seed=spec.seed,
    )


def known_label_errors(dataset: str) -> dict[str, str]:
    """Label errors a dataset documents itself: ``MISLABELED.csv`` (columns ``path,true_label``)
    beside an ImageFolder's class folders or beside a CSV source. Returns {sample id: true class
    name}; the manifest then records them as ``flipped`` with their ``true_label``, exactly like
    injected noise, so detection can be measured on real files (the bundled sample has one).
    """
    kind, _, arg = dataset.partition(":")
    if kind not in ("imagefolder", "csv") or not arg:
        return {}
    folder = Path(arg) if kind == "imagefolder" else Path(arg).parent
    listed = folder / "MISLABELED.csv"
    if not listed.is_file():
        return {}
    try:
        t = pd.read_csv(listed, dtype=str)
    except (OSError, ValueError) as e:
        raise DataError(f"{listed}: cannot read it ({e})") from e
    if not {"path", "true_label"} <= set(t.columns):
        raise DataError(f"{listed}: needs the columns path,true_label; has {', '.join(t.columns)}")
    return dict(zip(t["path"], t["true_label"], strict=True))


def _check_spec(spec: DataSpec) -> None:
    for name in ("n_train", "n_val", "n_test"):
        v = getattr(spec, name)
        if v is not None and v <= 0:
            raise DataError(f"{name} must be positive, got {v}", param=name)
    if not (0 <= spec.val_fraction < 1 and 0 <= spec.test_fraction < 1):
        raise DataError("validation and test fractions must be in [0, 1)")
    if spec.val_fraction + spec.test_fraction >= 1:
        raise DataError("validation and test fractions leave nothing to train on")
    if spec.backdoor:
        from engine.data.backdoor import TRIGGERS, Backdoor

        Backdoor.parse(spec.backdoor)
        if spec.trigger not in TRIGGERS:
            raise DataError(
                f"trigger must be one of {', '.join(TRIGGERS)}, got {spec.trigger!r}",
                param="trigger",
            )
        if not 0.0 < spec.backdoor_rate <= 1.0:
            raise DataError(
                f"backdoor_rate must be in (0, 1], got {spec.backdoor_rate}", param="backdoor_rate"
            )


def _select_classes(src: ImageSet, classes: list[int] | None) -> tuple[ImageSet, list[str]]:
    """Keep only `classes` (source label numbers), relabelled 0..k-1 in the order given."""
    if not classes:
        return src, list(src.class_names)
    n = len(src.class_names)
    bad = [c for c in classes if not 0 <= c < n]
    if bad:
        raise DataError(
            f"classes {bad} not in this dataset (it has classes 0..{n - 1})", param="classes"
        )
    if len(set(classes)) != len(classes):
        raise DataError(f"classes lists a class twice: {classes}", param="classes")
    if len(classes) < 2:
        raise DataError("classes needs at least two classes", param="classes")
    remap = torch.full((n,), -1, dtype=torch.long)
    for new, old in enumerate(classes):
        remap[old] = new
    new_labels = remap[src.labels]
    keep = torch.nonzero(new_labels >= 0).flatten()
    k = keep.tolist()
    sub = ImageSet(
        images=src.images[keep],
        labels=new_labels[keep],
        ids=[src.ids[i] for i in k],
        class_names=[src.class_names[c] for c in classes],
        paths=[src.paths[i] for i in k],
        split=[src.split[i] for i in k],
        skipped=src.skipped,
    )
    return sub, sub.class_names


def _assign_splits(src: ImageSet, spec: DataSpec) -> np.ndarray:
    """Split unassigned samples into train / val / test, stratified by class, seeded."""
    split = np.array(src.split, dtype=object)
    free = np.flatnonzero(split == "")
    has_test = bool((split == "test").any())
    has_val = bool((split == "val").any())
    val_f = 0.0 if has_val else spec.val_fraction
    test_f = 0.0 if has_test else spec.test_fraction
    rng = np.random.default_rng(spec.seed)
    labels = src.labels.numpy()
    for c in np.unique(labels[free]):
        idx = free[labels[free] == c]
        idx = idx[rng.permutation(len(idx))]
        n_val = int(round(val_f * len(idx)))
        n_test = int(round(test_f * len(idx)))
        split[idx[:n_val]] = "val"
        split[idx[n_val : n_val + n_test]] = "test"
        split[idx[n_val + n_test :]] = "train"
    if has_test and not has_val and not (split == "val").any():
        # The source gave train and test only: carve validation out of train.
        tr = np.flatnonzero(split == "train")
        for c in np.unique(labels[tr]):
            idx = tr[labels[tr] == c]
            idx = idx[rng.permutation(len(idx))]
            split[idx[: int(round(spec.val_fraction * len(idx)))]] = "val"
    return split
