"""Counterfactual retraining of a logged run, and what a retrained model is measured by.

``counterfactual`` replays the logged trajectory with samples dropped (weight 0) or relabelled:
mode ``all`` from theta_0, ``last`` from the start of the last epoch (Hara et al. 2019 Sec. 7.2's
"Retrain All" / "Retrain Last"; engine.retrain documents the modes). ``evaluate_theta`` gives the
metrics the proofs compare, ``query_values`` the quantity an LDS correlates, and
``validation_metrics`` what a recommendation judges on validation halves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from engine.changes import Changes
from engine.config import ConfigError
from engine.loading import LoadedRun
from engine.models import per_sample_loss, predict
from engine.problem import split_logits
from engine.sgd import run_steps
from engine.trajectory import Params

__all__ = ["counterfactual", "evaluate_theta", "query_values", "validation_metrics"]


def counterfactual(
    loaded: LoadedRun,
    changes: Changes,
    *,
    mode: str = "all",
    renormalise: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> Params:
    """Final weights of the counterfactual run ("all": from theta_0; "last": from the last epoch start).

    renormalise: each logged batch's mean is over the samples that stay (engine.sgd.sgd_step),
    so removing a group does not also shrink every step; False (the default, and what the scores
    estimate) keeps the logged 1/B_t.
    """
    traj, p = loaded.traj, loaded.problem
    if mode == "all":
        start = 0
    elif mode == "last":
        start = traj.nearest_checkpoint(traj.epoch_start(loaded.cfg.epochs - 1))
    else:
        raise ConfigError(f"counterfactual mode must be all or last, got {mode!r}")
    theta, v = traj.load_checkpoint(start, device=p.x.device)
    prob = replace(p, y=changes.labels(p.y)) if changes.n_relabel else p
    w = changes.weights(p.x.shape[0], p.x.dtype, p.x.device)
    run_steps(
        prob, traj, theta, v, start=start, stop=traj.n_steps, weights=w, renormalise=renormalise,
        on_step=on_step,
    )  # fmt: skip
    return theta


@torch.no_grad()
def evaluate_theta(loaded: LoadedRun, theta: Params) -> dict[str, Any]:
    """val/test loss and accuracy, test per-class accuracy (C,) and confusion matrix (C x C, rows = true);
    for a backdoored run also attack_success / attack_acc on test-2 (engine.data.backdoor)."""
    out: dict[str, Any] = {}
    k = loaded.bundle.n_classes
    for s in ("val", "test"):
        split = loaded.bundle.split(s)
        logits = split_logits(loaded.problem, theta, split)
        y = split.labels.to(logits.device)
        pred = predict(logits)
        out[f"{s}_loss"] = float(per_sample_loss(logits, y).mean())
        out[f"{s}_acc"] = float((pred == y).double().mean())
        if s == "test":
            conf = torch.zeros(k, k, dtype=torch.int64)
            conf.index_put_((y.cpu(), pred.cpu()), torch.ones_like(y.cpu()), accumulate=True)
            rows = conf.sum(1).clamp(min=1)
            out["per_class_acc"] = (conf.diag().double() / rows).tolist()
            out["confusion"] = conf.tolist()
    b = loaded.bundle
    if b.attack is not None:  # backdoor: attack success on test-2 next to clean test accuracy
        from engine.data.backdoor import attack_metrics

        pred = predict(split_logits(loaded.problem, theta, b.attack))
        out.update(attack_metrics(pred, b.attack.labels, int(b.attack_target or 0)))
    return out


def query_values(loaded: LoadedRun, theta: Params, query: str, test_ids: list[str]) -> np.ndarray:
    """(Q,) the query at weights theta: [mean validation loss] (query "val") or each listed test
    image's loss (query "test")."""
    b = loaded.bundle
    split = b.val if query == "val" else b.test
    with torch.no_grad():
        logits = split_logits(loaded.problem, theta, split)
        losses = per_sample_loss(logits, split.labels.to(logits.device)).double().cpu().numpy()
    if query == "val":
        return np.array([losses.mean()])
    pos = {sid: i for i, sid in enumerate(split.ids)}
    return losses[[pos[s] for s in test_ids]]


@torch.no_grad()
def validation_metrics(
    loaded: LoadedRun, theta: Params, subsets: Mapping[str, Sequence[int]]
) -> dict[str, dict[str, float]]:
    """{name: {"val_loss", "val_acc"}} of theta on each named subset of the validation images
    (indices into the validation split): what a recommendation judges a removal by."""
    split = loaded.bundle.val
    logits = split_logits(loaded.problem, theta, split)
    out = {}
    for name, idx in subsets.items():
        pick = torch.as_tensor(list(idx), dtype=torch.long)
        lg, y = logits[pick.to(logits.device)], split.labels[pick].to(logits.device)
        out[name] = {
            "val_loss": float(per_sample_loss(lg, y).mean()),
            "val_acc": float((predict(lg) == y).double().mean()),
        }
    return out
