"""CPU threads of a run's arithmetic: pinned, so that its results do not depend on the machine.

PyTorch's CPU kernels split reductions and matrix products by thread, so the same SGD step run
with 1 and with 2 intra-op threads differs in the last bits (measured on a digits mlp and lenet5).
Every place that replays or retrains a run (training, resume, counterfactual and fresh retrains,
replays from checkpoints, leave-one-out) runs under ``pinned_threads(cfg.threads)``: a retrain then
gives the same bits inline, in a local worker process or on a Ray node, on any machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["pinned_threads"]


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Run the block with exactly `n` intra-op CPU threads, then restore the previous count."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
