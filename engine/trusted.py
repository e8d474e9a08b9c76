"""A trusted reference: validation and test labels a person has checked, saved in the run.

Influence on the validation loss assumes the validation labels are right. When validation and test
come from the same labelling as training, an error shared by all three is *defended* by validation
influence and "proven" by an equally wrong test split. A person reviews a sample of validation
(and test) images instead, confirming or correcting each label; ``<run>/trusted.json`` keeps them:
{"labels": {sample id: class index}, "updated": unix time}, read-modify-write under the run's JSON
lock like selections.json.

How a run uses them (``apply_trusted``, called by engine.loading.load_run, so every query, estimator,
recommendation and retrain sees the same thing):

- validation: once any validation label is trusted, the validation split *is* the trusted images,
  with their checked labels. The query and the recommendation then rest only on labels a person
  confirmed (few and right beats many and systematically wrong);
- test: checked labels replace the given ones where they exist; the rest of the test split stays,
  so the proof keeps its size.

The run's fingerprint includes a hash of the file (engine.fingerprint.run_fingerprint), so
scores and recommendations made before a change are recomputed, not reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engine.config import ConfigError
from engine.runs import RunDir

if TYPE_CHECKING:
    from engine.data.manifest import DataBundle

__all__ = [
    "TRUSTED_FILE",
    "apply_trusted",
    "forget_trusted",
    "load_trusted",
    "set_trusted",
    "trusted_counts",
    "trusted_hash",
]

TRUSTED_FILE = "trusted.json"
SPLITS = ("val", "test")


def load_trusted(run_dir: str | os.PathLike[str]) -> dict[str, int]:
    """{sample id: checked class index} ({} when nothing was reviewed)."""
    p = RunDir(run_dir).file(TRUSTED_FILE)
    if not p.exists():
        return {}
    raw = json.loads(p.read_text(encoding="utf-8")) or {}
    return {str(k): int(v) for k, v in (raw.get("labels") or {}).items()}


def trusted_hash(run_dir: str | os.PathLike[str]) -> str | None:
    """sha256 of the trusted labels (sorted), or None when there are none."""
    labels = load_trusted(run_dir)
    if not labels:
        return None
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()


def _check(bundle: DataBundle, sample_id: str, label: int) -> None:
    where = {sid: s for s in SPLITS for sid in bundle.split(s).ids}
    if sample_id not in where:
        what = "a training sample" if sample_id in set(bundle.train.ids) else "not in this run"
        raise ConfigError(
            f"sample id {sample_id!r} is {what}: only validation and test labels are reviewed"
        )
    if not isinstance(label, int | np.integer) or not 0 <= int(label) < bundle.n_classes:
        raise ConfigError(f"label {label!r} is not a class index 0..{bundle.n_classes - 1}")


def _update(run_dir: str | os.PathLike[str], fn: Any) -> dict[str, int]:
    def upd(raw: Any) -> dict[str, Any]:
        labels = {str(k): int(v) for k, v in ((raw or {}).get("labels") or {}).items()}
        fn(labels)
        return {"labels": dict(sorted(labels.items())), "updated": time.time()}

    new = RunDir(run_dir).update_json(TRUSTED_FILE, upd, default={"labels": {}})
    return {str(k): int(v) for k, v in new["labels"].items()}


def set_trusted(run_dir: str | os.PathLike[str], labels: dict[str, int]) -> dict[str, int]:
    """Record checked labels {validation / test sample id: class index}; returns all of them.
    ConfigError naming the first id that is not a validation / test sample or a bad label."""
    from engine.data.manifest import DataBundle

    bundle = DataBundle.load(RunDir.open(run_dir).path)
    for sid, lab in labels.items():
        _check(bundle, str(sid), lab)
    return _update(run_dir, lambda d: d.update({str(k): int(v) for k, v in labels.items()}))


def forget_trusted(run_dir: str | os.PathLike[str], ids: list[str]) -> dict[str, int]:
    """Forget the checked labels of `ids` (a mis-click); returns what remains."""
    return _update(run_dir, lambda d: [d.pop(str(i), None) for i in ids])


def trusted_counts(run_dir: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Per split: {"checked", "corrected"} (a correction = checked label != given label)."""
    from engine.data.manifest import DataBundle

    labels = load_trusted(run_dir)
    out = {s: {"checked": 0, "corrected": 0} for s in SPLITS}
    if not labels:
        return out
    bundle = DataBundle.load(RunDir.open(run_dir).path)
    for s in SPLITS:
        sp = bundle.split(s)
        for sid, y in zip(sp.ids, sp.labels.tolist(), strict=True):
            if sid in labels:
                out[s]["checked"] += 1
                out[s]["corrected"] += int(labels[sid] != int(y))
    return out


def apply_trusted(bundle: DataBundle, labels: dict[str, int]) -> DataBundle:
    """The bundle as the run uses it (module docstring): validation = the trusted validation
    images with their checked labels (when there are any); test labels corrected where checked."""
    if not labels:
        return bundle
    val, test = bundle.val, bundle.test
    keep = [i for i, sid in enumerate(val.ids) if sid in labels]
    if keep:
        val = val.subset(torch.tensor(keep, dtype=torch.long))
        val = replace(
            val, labels=torch.tensor([labels[sid] for sid in val.ids], dtype=val.labels.dtype)
        )
    fixed = [(i, labels[sid]) for i, sid in enumerate(test.ids) if sid in labels]
    if fixed:
        y = test.labels.clone()
        for i, lab in fixed:
            y[i] = lab
        test = replace(test, labels=y)
    return replace(bundle, val=val, test=test)
