"""Changes to a run's training set (drop, relabel), validated and as training-split indices."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from engine.config import ConfigError

if TYPE_CHECKING:
    from engine.loading import LoadedRun

__all__ = ["Changes", "resolve_changes"]


@dataclass(frozen=True)
class Changes:
    """Validated changes to the training set, as training-split indices.

    drop: int64 (D,) indices to leave out; relabel_idx: int64 (R,) indices; relabel_to: int64 (R,).
    """

    drop: torch.Tensor
    relabel_idx: torch.Tensor
    relabel_to: torch.Tensor

    @property
    def n_drop(self) -> int:
        return int(self.drop.numel())

    @property
    def n_relabel(self) -> int:
        return int(self.relabel_idx.numel())

    def weights(self, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """Per-sample weights (N,): 0 for dropped samples, 1 otherwise (None if nothing dropped)."""
        if not self.n_drop:
            return None
        w = torch.ones(n, dtype=dtype, device=device)
        w[self.drop.to(device)] = 0
        return w

    def labels(self, y: torch.Tensor) -> torch.Tensor:
        """A copy of the labels y (N,) with the relabelled samples changed (y itself if none)."""
        if not self.n_relabel:
            return y
        out = y.clone()
        out[self.relabel_idx.to(y.device)] = self.relabel_to.to(y.device)
        return out

    def keep(self, n: int) -> torch.Tensor:
        """Indices (N - D,) of the samples that stay, in order."""
        mask = torch.ones(n, dtype=torch.bool)
        mask[self.drop] = False
        return torch.nonzero(mask).flatten()


def resolve_changes(
    loaded: LoadedRun, drop: Sequence[str] = (), relabel: Mapping[str, int] | None = None
) -> Changes:
    """Map sample ids to training indices; ConfigError naming any id that is not a training sample."""
    b = loaded.bundle
    pos = {sid: i for i, sid in enumerate(b.train.ids)}
    other = set(b.val.ids) | set(b.test.ids)

    def index(sid: str) -> int:
        if sid not in pos:
            where = (
                "is a validation/test sample, not a training sample"
                if sid in other
                else "is not in this run"
            )
            raise ConfigError(f"sample id {sid!r} {where}")
        return pos[sid]

    d = list(dict.fromkeys(index(str(s)) for s in drop))
    relabel = dict(relabel or {})
    r_idx, r_to = [], []
    k = b.n_classes
    for sid, lab in relabel.items():
        i = index(str(sid))
        if i in d:
            raise ConfigError(f"sample id {sid!r} is both dropped and relabelled; choose one")
        if not isinstance(lab, int | np.integer) or not 0 <= int(lab) < k:
            raise ConfigError(f"new label {lab!r} for {sid!r} is not a class index 0..{k - 1}")
        r_idx.append(i)
        r_to.append(int(lab))
    if len(d) >= len(b.train):
        raise ConfigError(f"cannot drop all {len(b.train)} training samples; keep at least one")
    # A retrain with no changes is allowed: it reproduces the run (a useful check).
    return Changes(*(torch.tensor(v, dtype=torch.int64) for v in (d, r_idx, r_to)))
