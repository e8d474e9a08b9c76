"""Label noise for demos and benchmarks: uniform flips or systematic pair flips (c -> c+1)."""

from __future__ import annotations

import torch

from engine.data.manifest import DataError

NOISE_KINDS = ("uniform", "pair")


def inject_label_noise(
    labels: torch.Tensor, *, rate: float, kind: str, n_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip exactly round(rate * N) labels.

    labels: int64 (N,). Returns (noisy labels (N,), indices of the flipped samples (M,), sorted).
    uniform: each chosen label becomes a different class drawn uniformly.
    pair: each chosen label c becomes (c + 1) mod n_classes ("horse labelled bird").
    """
    if not 0.0 <= rate < 1.0:
        raise DataError(f"noise must be in [0, 1), got {rate}", param="noise")
    if kind not in NOISE_KINDS:
        raise DataError(
            f"noise_kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}", param="noise_kind"
        )
    if n_classes < 2 and rate > 0:
        raise DataError("label noise needs at least two classes")
    n = labels.shape[0]
    m = int(round(rate * n))
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:m].sort().values
    noisy = labels.clone()
    if kind == "pair":
        noisy[idx] = (labels[idx] + 1) % n_classes
    else:
        shift = torch.randint(1, n_classes, (m,), generator=g)
        noisy[idx] = (labels[idx] + shift) % n_classes
    return noisy, idx
