"""Counterfactual retraining: exact reproduction, leave-one-out against an independent loop, relabel."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.func import functional_call

from engine.changes import resolve_changes
from engine.loading import load_run
from engine.models import per_sample_loss
from engine.retrain import counterfactual, list_experiments, retrain
from tests.engine.conftest import same_weights


@pytest.mark.parametrize("mode", ["all", "last"])
def test_nothing_dropped_reproduces_final_weights(run32: Path, mode: str) -> None:
    loaded = load_run(run32)
    theta = counterfactual(loaded, resolve_changes(loaded), mode=mode)
    assert same_weights(theta, loaded.final_theta)


def _independent_leave_one_out(run_dir: Path, k: int) -> dict[str, torch.Tensor]:
    """Plain SGD with momentum and weight decay over the logged batches, sample k's term removed."""
    loaded = load_run(run_dir)
    p, traj, cfg = loaded.problem, loaded.traj, loaded.cfg
    theta = {n: t.clone() for n, t in loaded.initial_theta().items()}
    vel = {n: torch.zeros_like(t) for n, t in theta.items()}
    for t in range(traj.n_steps):
        idx = traj.batch(t)
        keep = idx[idx != k]
        leaves = {n: x.detach().requires_grad_(True) for n, x in theta.items()}
        out = functional_call(p.model, leaves, (p.x[keep],))
        loss = per_sample_loss(out, p.y[keep]).sum() / len(idx)  # same 1/B_t as the logged batch
        grads = torch.autograd.grad(loss, list(leaves.values()))
        with torch.no_grad():
            for (n, x), g in zip(theta.items(), grads, strict=True):
                vel[n] = cfg.momentum * vel[n] + g + cfg.weight_decay * x
                theta[n] = x - traj.lr(t) * vel[n]
    return theta


def test_drop_one_equals_independent_leave_one_out(run64: Path) -> None:
    loaded = load_run(run64)
    k = 7
    got = counterfactual(loaded, resolve_changes(loaded, [loaded.bundle.train.ids[k]]))
    want = _independent_leave_one_out(run64, k)
    final = loaded.final_theta
    for n in want:
        assert torch.allclose(got[n], want[n], rtol=0, atol=1e-12), n
    assert not same_weights(got, final)  # leaving k out did change the weights


def test_relabel_changes_exactly_those_labels(run32: Path) -> None:
    loaded = load_run(run32)
    ids = loaded.bundle.train.ids
    y = loaded.problem.y
    new = {ids[3]: int((y[3] + 1) % 10), ids[11]: int((y[11] + 2) % 10)}
    ch = resolve_changes(loaded, relabel=new)
    y2 = ch.labels(y)
    changed = torch.nonzero(y2 != y).flatten().tolist()
    assert changed == [3, 11]
    assert int(y2[3]) == new[ids[3]] and int(y2[11]) == new[ids[11]]
    assert torch.equal(loaded.problem.y, y)  # the run's labels are untouched
    theta = counterfactual(loaded, ch, mode="last")
    assert not same_weights(theta, loaded.final_theta)


def test_retrain_all_with_control_saves_result(run32: Path) -> None:
    loaded = load_run(run32)
    ids = loaded.bundle.train.ids
    seen: list[tuple[int, int]] = []
    res = retrain(
        run32,
        drop=ids[:5],
        mode="all",
        control_draws=2,
        progress=lambda d, t, _l: seen.append((d, t)),
    )
    assert res["drop"] == ids[:5] and res["n_drop"] == 5
    assert len(res["after"]["runs"]) == 1 and len(res["control_runs"]["runs"]) == 2
    assert seen[-1] == (3, 3)  # progress counts finished retrains (engine.executor)
    for draw in res["control_drops"]:
        assert len(draw) == 5 and not set(draw) & set(ids[:5])
    run = res["after"]["runs"][0]
    k = loaded.bundle.n_classes
    assert len(run["per_class_acc"]) == k and sum(map(sum, run["confusion"])) == len(
        loaded.bundle.test
    )
    assert res["before"]["runs"][0]["test_acc"] == pytest.approx(
        sum(r[i] for i, r in enumerate(res["before"]["runs"][0]["confusion"]))
        / len(loaded.bundle.test)
    )
    assert res["stats"]["test_acc"]["after_vs_control"]["test"] in ("prediction", "constant")
    assert "test accuracy" in res["verdict"] and "loss" in res["verdict"]
    assert f"{len(loaded.bundle.test)} test images" in res["verdict"]
    assert "Removing these 5 images" in res["verdict"] and "5 random images" in res["verdict"]
    listed = list_experiments(run32)
    assert listed[0]["id"] == res["id"] and Path(res["path"], "result.json").is_file()


def test_retrain_fresh_pairs_seeds(run32: Path) -> None:
    loaded = load_run(run32)
    ids = loaded.bundle.train.ids
    res = retrain(loaded, drop=ids[:3], relabel={ids[5]: 0}, mode="fresh", seeds=2, save=False)
    assert res["before"]["summary"]["test_acc"]["n"] == 2
    assert res["control_runs"]["summary"]["test_acc"]["n"] == 2
    # seed i trains before, after and control draw i: the paired test, not Welch's
    assert res["paired"] is True and res["fresh_seeds"] == [
        loaded.cfg.seed + 1,
        loaded.cfg.seed + 2,
    ]
    for m in ("test_acc", "test_loss"):
        for k in ("after_vs_before", "after_vs_control"):
            assert res["stats"][m][k]["test"] in ("paired", "constant"), (m, k)
    a = res["after"]["summary"]["test_loss"]["values"]
    c = res["control_runs"]["summary"]["test_loss"]["values"]
    if res["stats"]["test_loss"]["after_vs_control"]["test"] == "paired":
        from scipy.stats import ttest_rel

        assert res["stats"]["test_loss"]["after_vs_control"]["p"] == pytest.approx(
            ttest_rel(a, c).pvalue
        )
    assert res["relabel"] == {ids[5]: 0}
    assert res["verdict"].startswith("Removing 3 images and relabelling 1 image")
