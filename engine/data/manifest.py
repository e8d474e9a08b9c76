"""The data types every source produces and every later stage consumes.

Images are kept as uint8 tensors of shape (N, C, H, W); models see ``images / 255`` as float.
Stable sample ids (strings such as ``digits-0042`` or ``cat/img_001.png``) go end to end:
manifest -> scores -> gallery -> drop list -> export.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from engine.options import ParamError
from engine.runs import atomic_save_tensors, atomic_write_text, load_tensors

SPLITS = ("train", "val", "test")
ATTACK_SUFFIX = "+wm"  # test-2 (backdoor) ids: "<test id>+wm"


class DataError(ParamError):
    """Bad input data: the message names the offending file, row, value or option (``param``)."""


@dataclass
class ImageSet:
    """Everything a source yields, before class filtering, splitting and noise.

    images: uint8 (N, C, H, W); labels: int64 (N,); ids: N unique strings; paths: N strings
    ('' when the image has no file); split: N of 'train' / 'val' / 'test' / '' ('' = unassigned).
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]
    class_names: list[str]
    paths: list[str] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: reason" for unreadable files

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not self.paths:
            self.paths = [""] * n
        if not self.split:
            self.split = [""] * n
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError("images must be a uint8 tensor of shape (N, C, H, W)")
        if not (
            self.images.shape[0] == self.labels.shape[0] == n == len(self.paths) == len(self.split)
        ):
            raise DataError("images, labels, ids, paths and split must have the same length")
        if len(set(self.ids)) != n:
            dup = pd.Series(self.ids)[pd.Series(self.ids).duplicated()].iloc[0]
            raise DataError(f"duplicate sample id {dup!r}")


@dataclass
class Split:
    """One split: ids (N,), images uint8 (N, C, H, W), labels int64 (N,) as used for training.

    features: a head-mode run's model inputs (engine.backbone), float32 (N, D, 1, 1) computed once
    by a frozen backbone; None for a run that trains on the images themselves. The images stay
    what the pages show either way.
    """

    ids: list[str]
    images: torch.Tensor
    labels: torch.Tensor
    features: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def x(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Model input: the features (N, D, 1, 1) when there are any, else the images as float
        (N, C, H, W) in [0, 1]."""
        return self.x_rows(slice(None), dtype)

    def x_rows(
        self, rows: slice | torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Model input of some rows (a slice or an index tensor), as x()."""
        if self.features is not None:
            return self.features[rows].to(dtype)
        return self.images[rows].to(dtype) / 255.0

    def model_store(self) -> torch.Tensor:
        """What the model's inputs are made of: the features, else the uint8 images
        (engine.inputs.Inputs converts them per batch)."""
        return self.images if self.features is None else self.features

    def subset(self, rows: torch.Tensor) -> Split:
        """The rows `rows` (an index tensor) of this split, features included."""
        idx = rows.tolist()
        return Split(
            [self.ids[i] for i in idx],
            self.images[rows],
            self.labels[rows],
            None if self.features is None else self.features[rows],
        )


@dataclass
class DataBundle:
    """Train / validation / test splits plus the manifest that describes every sample.

    manifest columns: sample_id, split, label (as trained on), true_label (before injected
    noise), path, flipped (bool: label != true_label because Retracer injected noise), and, for a
    backdoored run only, poisoned (bool: stamped with the trigger and relabelled; also flipped).

    attack: test-2 of a backdoored run (see engine.data.backdoor), not in the manifest: every
    test image outside class ``attack_target``, watermarked, ids "<test id>+wm"; None otherwise.
    """

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    manifest: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    attack: Split | None = None
    attack_target: int | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model's input shape: (C, H, W) of the images, or (D, 1, 1) of a head-mode run's
        features."""
        c, h, w = self.train.model_store().shape[1:]
        return int(c), int(h), int(w)

    def split(self, name: str) -> Split:
        if name == "attack" and self.attack is not None:
            return self.attack
        if name not in SPLITS:
            raise KeyError(name)
        return getattr(self, name)  # type: ignore[no-any-return]

    def poisoned_ids(self) -> list[str]:
        """Training ids stamped with a backdoor trigger ([] for a run without a backdoor)."""
        m = self.manifest
        if "poisoned" not in m.columns:
            return []
        return list(m.loc[m["poisoned"].astype(bool), "sample_id"])

    def flipped_ids(self) -> list[str]:
        m = self.manifest
        return list(m.loc[m["flipped"], "sample_id"])

    # -- persistence -----------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write manifest.csv, classes.txt and data.safetensors into `folder`, atomically each."""
        folder = Path(folder)
        tensors: dict[str, torch.Tensor] = {}
        for s in SPLITS:
            sp = self.split(s)
            tensors[f"{s}.images"] = sp.images
            tensors[f"{s}.labels"] = sp.labels
            if sp.features is not None:
                tensors[f"{s}.features"] = sp.features
        if self.attack is not None:
            tensors["attack.images"] = self.attack.images
            tensors["attack.labels"] = self.attack.labels
            if self.attack.features is not None:
                tensors["attack.features"] = self.attack.features
            tensors["attack.target"] = torch.tensor([int(self.attack_target or 0)])
            pos = {sid: i for i, sid in enumerate(self.test.ids)}
            tensors["attack.index"] = torch.tensor(
                [pos[i.removesuffix(ATTACK_SUFFIX)] for i in self.attack.ids], dtype=torch.int64
            )
        atomic_save_tensors(folder / "data.safetensors", tensors)
        atomic_write_text(folder / "manifest.csv", self.manifest.to_csv(index=False))
        atomic_write_text(folder / "classes.txt", "\n".join(self.class_names) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> DataBundle:
        folder = Path(folder)
        t = load_tensors(folder / "data.safetensors")
        manifest = pd.read_csv(folder / "manifest.csv", dtype={"sample_id": str, "path": str})
        manifest["path"] = manifest["path"].fillna("")
        names = (folder / "classes.txt").read_text(encoding="utf-8").splitlines()
        splits = {}
        for s in SPLITS:
            ids = list(manifest.loc[manifest["split"] == s, "sample_id"])
            images, labels = t[f"{s}.images"], t[f"{s}.labels"]
            if len(ids) != images.shape[0]:
                raise DataError(
                    f"{folder}: manifest and data.safetensors disagree on the {s} split"
                )
            splits[s] = Split(ids, images, labels, t.get(f"{s}.features"))
        attack, target = None, None
        if "attack.images" in t:  # a backdoored run (older runs have no test-2)
            test_ids = splits["test"].ids
            ids = [test_ids[i] + ATTACK_SUFFIX for i in t["attack.index"].tolist()]
            attack = Split(ids, t["attack.images"], t["attack.labels"], t.get("attack.features"))
            target = int(t["attack.target"][0])
        return cls(
            splits["train"],
            splits["val"],
            splits["test"],
            names,
            manifest,
            attack=attack,
            attack_target=target,
        )
