"""The order in which a person checks labels (the Check labels page, engine.trusted)."""

from __future__ import annotations

import os

import numpy as np

from engine.config import ConfigError
from engine.export import run_predictions
from engine.trusted import SPLITS, load_trusted

__all__ = ["RANDOM_EVERY", "review_queue"]

RANDOM_EVERY = 4  # every 4th place of the review queue is a random image (an unbiased sample)


def review_queue(
    run_dir: str | os.PathLike[str], split: str = "val", *, seed: int = 0
) -> list[str]:
    """The split's not-yet-checked ids in a fixed, informative order: the images whose given label the
    final model finds least likely first (where labelling errors concentrate), with every
    RANDOM_EVERY-th place a random one, so the checked set also estimates the error rate of the
    rest. Ranked with the given labels, whatever was checked already."""
    if split not in SPLITS:
        raise ConfigError(f"split must be val or test, got {split!r}")
    # the final weights' losses on the given labels, as saved in the run (no forward pass)
    preds = run_predictions(os.fspath(run_dir))
    part = preds[preds["split"] == split]
    ids: list[str] = part["sample_id"].tolist()
    loss = part["loss"].to_numpy(dtype=np.float64)
    done = load_trusted(os.fspath(run_dir))
    todo = list(range(len(ids)))  # order them all, so the order stays put as labels are checked
    by_loss = sorted(todo, key=lambda i: (-loss[i], ids[i]))
    rng = np.random.default_rng([seed, 2_718])
    shuffled = [todo[i] for i in rng.permutation(len(todo))]
    out: list[int] = []
    seen: set[int] = set()
    at = {"loss": 0, "random": 0}
    lists = {"loss": by_loss, "random": shuffled}

    def take(which: str) -> bool:
        lst = lists[which]
        while at[which] < len(lst) and lst[at[which]] in seen:
            at[which] += 1
        if at[which] == len(lst):
            return False
        seen.add(lst[at[which]])
        out.append(lst[at[which]])
        return True

    while len(out) < len(todo):
        first = "random" if (len(out) + 1) % RANDOM_EVERY == 0 else "loss"
        take(first) or take("loss" if first == "random" else "random")
    return [ids[i] for i in out if ids[i] not in done]
