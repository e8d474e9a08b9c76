"""Backdoor (poisoned data), the ITLM scenario: a small watermark on some class-a training images
relabelled b, so the trained model sends any watermarked image to b.

- ``trigger_mask(h, w, trigger)``: bool (H, W), the trigger's pixels, a few pixels in the
  bottom-right corner ("x": both diagonals of an s x s square, "l": its left column and bottom row,
  s = max(3, min(H, W) // 7), one pixel from the border on images of 16 pixels or more).
- ``stamp(images, mask)``: a copy of uint8 images (N, C, H, W) with the mask's pixels set to 255
  in every channel (high contrast on dark backgrounds; RGB and grayscale alike).
- ``poison(...)``: picks round(rate * n_a) training images whose given and true label is a, stamps
  them and relabels them b (their true_label stays a, so they are also ``flipped`` in the manifest;
  the manifest's ``poisoned`` column marks them).
- ``attack_set(...)``: test-2, every test image whose label is not b, stamped, with its true label.
- ``attack_metrics(pred, target)``: attack success = fraction of test-2 predicted as b.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.data.manifest import ATTACK_SUFFIX, DataError, Split

TRIGGERS = ("x", "l")


@dataclass(frozen=True)
class Backdoor:
    """A parsed ``--backdoor a:b``: source class numbers a (poisoned) and b (target)."""

    source: int
    target: int

    @classmethod
    def parse(cls, text: str) -> Backdoor:
        a, sep, b = str(text).partition(":")
        try:
            if not sep:
                raise ValueError
            out = cls(int(a), int(b))
        except ValueError as e:
            raise DataError(
                f"backdoor must look like a:b (class numbers), got {text!r}", param="backdoor"
            ) from e
        if out.source == out.target:
            raise DataError(
                f"backdoor {text}: the poisoned and target classes must differ", param="backdoor"
            )
        return out

    def resolve(self, classes: list[int] | None, n_classes: int) -> tuple[int, int]:
        """(a, b) as the run's class indices (after --classes renumbering)."""
        out = []
        for c in (self.source, self.target):
            if classes:
                if c not in classes:
                    raise DataError(
                        f"backdoor class {c} is not one of the classes kept, {classes}",
                        param="backdoor",
                    )
                out.append(classes.index(c))
            else:
                if not 0 <= c < n_classes:
                    raise DataError(
                        f"backdoor class {c} not in this dataset (it has classes 0..{n_classes - 1})",
                        param="backdoor",
                    )
                out.append(c)
        return out[0], out[1]


def trigger_size(h: int, w: int) -> int:
    return max(3, min(h, w) // 7)


def trigger_mask(h: int, w: int, trigger: str) -> torch.Tensor:
    """bool (H, W): the trigger's pixels in the bottom-right corner, scaled to the image size."""
    if trigger not in TRIGGERS:
        raise DataError(
            f"trigger must be one of {', '.join(TRIGGERS)}, got {trigger!r}", param="trigger"
        )
    s = trigger_size(h, w)
    if s > min(h, w):
        raise DataError(f"images of {h}x{w} are too small for a {s}x{s} trigger")
    margin = 1 if min(h, w) >= 16 else 0
    sq = torch.zeros(s, s, dtype=torch.bool)
    i = torch.arange(s)
    if trigger == "x":
        sq[i, i] = True
        sq[i, s - 1 - i] = True
    else:
        sq[:, 0] = True
        sq[s - 1, :] = True
    mask = torch.zeros(h, w, dtype=torch.bool)
    r0, c0 = h - margin - s, w - margin - s
    mask[r0 : r0 + s, c0 : c0 + s] = sq
    return mask


def stamp(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A copy of uint8 images (N, C, H, W) with mask (H, W) pixels at 255 in every channel."""
    out = images.clone()
    out[:, :, mask] = 255
    return out


def poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    true: torch.Tensor,
    *,
    source: int,
    target: int,
    rate: float,
    trigger: str,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Stamp and relabel round(rate * n_a) training images with label == true == source.

    images uint8 (N, C, H, W), labels / true int64 (N,). Returns (images, labels, poisoned
    indices (M,) sorted); inputs are not modified.
    """
    if not 0.0 < rate <= 1.0:
        raise DataError(f"backdoor_rate must be in (0, 1], got {rate}", param="backdoor_rate")
    cand = np.flatnonzero((labels == source).numpy() & (true == source).numpy())
    m = int(round(rate * len(cand)))
    if m == 0:
        raise DataError(
            f"backdoor_rate {rate} of the {len(cand)} training images of class {source} "
            "poisons none; raise the rate or use more training data",
            param="backdoor_rate",
        )
    rng = np.random.default_rng([seed, 0xBAD])
    idx = np.sort(rng.choice(cand, size=m, replace=False))
    mask = trigger_mask(images.shape[2], images.shape[3], trigger)
    t = torch.as_tensor(idx, dtype=torch.long)
    out, lab = images.clone(), labels.clone()
    out[t] = stamp(images[t], mask)
    lab[t] = target
    return out, lab, idx


def attack_set(test: Split, *, target: int, trigger: str) -> tuple[Split, torch.Tensor]:
    """test-2: every test image whose label is not `target`, stamped, with its own label.

    Returns (the split with ids "<test id>+wm", positions (M,) of its images in `test`).
    """
    pos = torch.nonzero(test.labels != target).flatten()
    if len(pos) == 0:
        raise DataError("the test split has no image outside the backdoor's target class")
    mask = trigger_mask(test.images.shape[2], test.images.shape[3], trigger)
    ids = [test.ids[i] + ATTACK_SUFFIX for i in pos.tolist()]
    return Split(ids, stamp(test.images[pos], mask), test.labels[pos].clone()), pos


def attack_metrics(pred: torch.Tensor, labels: torch.Tensor, target: int) -> dict[str, float]:
    """attack_success = fraction of test-2 predicted as `target`; attack_acc = fraction still right.

    pred, labels: int64 (M,) predicted and true classes of the test-2 images.
    """
    if pred.numel() == 0:
        return {"attack_success": float("nan"), "attack_acc": float("nan")}
    pred, labels = pred.cpu(), labels.cpu()
    return {
        "attack_success": float((pred == target).double().mean()),
        "attack_acc": float((pred == labels).double().mean()),
    }
