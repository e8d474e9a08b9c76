"""The linear datamodeling score (engine.experiments.lds) against brute force and real retrains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from engine.cli import main
from engine.config import ConfigError
from engine.experiments.additivity import additive_ceiling
from engine.experiments.lds import (
    LdsResult,
    ground_truth,
    lds,
    query_values,
    subset,
)
from engine.influence.api import load_scores
from engine.loading import load_run
from engine.retrain import retrain
from engine.trusted import set_trusted


def quick(run: Path, **kw: object) -> LdsResult:
    """lds with few bootstrap draws and nothing saved (the tests' runs are tiny)."""
    return lds(run, bootstrap=50, save=False, **kw)  # type: ignore[arg-type]


def test_lds_equals_a_brute_force_recomputation(tiny_copy: Path) -> None:
    res = lds(
        tiny_copy,
        methods=["hydra", "loss"],
        fractions=["0.1"],
        subsets=8,
        bootstrap=200,
        save=False,
    )
    loaded = load_run(tiny_copy)
    for m in ("hydra", "loss"):
        scores = load_scores(tiny_copy, m)["score"].to_numpy()
        truth, pred = [], []
        for j in range(8):
            drop = subset(loaded, 0.1, j)
            after = retrain(
                loaded, drop=[loaded.bundle.train.ids[i] for i in drop], control=None, save=False
            )
            truth.append(after["after"]["summary"]["val_loss"]["mean"])  # an independent retrain
            pred.append(scores[drop].sum())
        want = spearmanr(truth, pred).statistic
        cell = res["methods"][m]["0.1"]
        assert cell["lds"] == pytest.approx(want, abs=1e-12)
        assert cell["ci"][0] <= cell["lds"] <= cell["ci"][1] and cell["n_subsets"] == 8
    assert res["retrains"] == 8 and len(subset(loaded, 0.1, 0)) == 20  # 10% of 200


def test_single_model_truth_of_one_subset_is_an_independent_retrain(tiny_copy: Path) -> None:
    """The cached value for a subset equals plain SGD over the logged batches with those samples
    given weight 0 (the counterfactual "all" retrain), recomputed here from scratch."""
    loaded = load_run(tiny_copy)
    truth, _ = ground_truth(loaded, [0.5], 3)
    drop = set(subset(loaded, 0.5, 2).tolist())
    p, traj = loaded.problem, loaded.traj
    theta = {k: t.clone() for k, t in loaded.initial_theta().items()}
    vel = {k: torch.zeros_like(t) for k, t in theta.items()}
    from torch.func import functional_call

    from engine.models import per_sample_loss

    for t in range(traj.n_steps):
        idx = traj.batch(t)
        keep = torch.tensor([int(i) for i in idx if int(i) not in drop], dtype=torch.int64)
        leaves = {k: x.detach().requires_grad_(True) for k, x in theta.items()}
        loss = per_sample_loss(
            functional_call(p.model, leaves, (p.x[keep],)), p.y[keep]
        ).sum() / len(idx)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        with torch.no_grad():
            for (k, x), g in zip(theta.items(), grads, strict=True):
                vel[k] = p.momentum * vel[k] + g + p.weight_decay * x
                theta[k] = x - traj.lr(t) * vel[k]
    want = query_values(loaded, theta, "val", [])
    assert truth[0.5][2] == pytest.approx(want, rel=1e-5)  # float32 run: summation order differs


def test_the_truth_is_cached_and_reused_until_the_run_changes(tiny_copy: Path) -> None:
    first = quick(tiny_copy, methods=["loss"], fractions=[0.05], subsets=4)
    cache = tiny_copy / "lds" / "truth-single-val-s1.json"
    assert first["retrains"] == 4 and cache.is_file()
    again = quick(tiny_copy, methods=["margin"], fractions=[0.05], subsets=6)
    assert again["retrains"] == 2  # only the two new subsets
    assert len(json.loads(cache.read_text())["entries"]) == 6
    set_trusted(tiny_copy, {load_run(tiny_copy).bundle.val.ids[0]: 1})  # another query: stale
    assert quick(tiny_copy, methods=["loss"], fractions=[0.05], subsets=4)["retrains"] == 4


def test_per_test_image_lds_and_fresh_seeds(tiny_copy: Path) -> None:
    res = quick(tiny_copy, methods=["tracin"], fractions=[0.5], subsets=5, query="test", n_test=4)
    assert len(res["test_ids"]) == 4 and np.isfinite(res["methods"]["tracin"]["0.5"]["lds"])
    fresh = quick(tiny_copy, methods=["loss"], fractions=[0.5], subsets=4, setting="fresh", seeds=2)
    assert fresh["retrains"] == 4 * 2 and fresh["seeds"] == 2  # subsets x seeds
    assert (tiny_copy / "lds" / "truth-fresh-val-s2.json").is_file()


def test_a_method_variant_is_scored_with_its_options_and_not_stored(tiny_copy: Path) -> None:
    """'name:key=value' specs: the variant's own scores (run_method with those options) give its
    LDS, beside the plain method's; only the plain method's scores land in the run."""
    from engine.influence.methods import run_method
    from engine.influence.queries import Query

    spec = "sgd-influence:group_fraction=0.5"
    res = quick(tiny_copy, methods=["sgd-influence", spec], fractions=[0.5], subsets=6)
    loaded = load_run(tiny_copy)
    truth, _ = ground_truth(loaded, [0.5], 6)
    for m, s in (
        (spec, run_method("sgd-influence", loaded, Query("val"), group_fraction=0.5)[:, 0]),
        ("sgd-influence", load_scores(tiny_copy, "sgd-influence")["score"].to_numpy()),
    ):
        pred = [s[subset(loaded, 0.5, j)].sum() for j in range(6)]
        want = spearmanr(truth[0.5][:, 0], pred).statistic
        assert res["methods"][m]["0.5"]["lds"] == pytest.approx(want, abs=1e-12)
    stored = json.loads(
        (tiny_copy / "influence" / "sgd-influence" / "val" / "params.json").read_text()
    )
    assert stored["options"]["group_fraction"] == 0.0


def test_additive_ceiling_is_one_for_additive_changes_and_falls_with_non_additive_noise() -> None:
    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(2, 200, 1))
    exact = additive_ceiling(np.concatenate([fa, fb]), fa + fb, draws=50)
    assert exact["noise_share"] == pytest.approx(0, abs=1e-12) and exact["r_max"] == pytest.approx(
        1
    )
    # F = an additive part (variance 1) + independent noise (variance 1) in each of the 3 groups
    la, lb, na, nb, nab = rng.normal(size=(5, 20_000, 1))
    noisy = additive_ceiling(np.concatenate([la + na, lb + nb]), la + lb + nab, draws=50)
    assert noisy["noise_share"] == pytest.approx(0.5, abs=0.03)
    assert noisy["r_max"] == pytest.approx(0.5**0.5, abs=0.03)
    assert noisy["ci"][0] <= noisy["r_max"] <= noisy["ci"][1] and noisy["pairs"] == 20_000


def test_the_ceiling_retrains_the_unions_of_paired_subsets(
    tiny_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ceiling: subsets j and j + M/2 are retrained together (cached like the truth), and the
    ceiling is additive_ceiling of those changes; an independent retrain gives the same union."""
    res = quick(tiny_copy, methods=["loss"], fractions=[0.1, 0.5], subsets=6, ceiling=True)
    assert res["retrains"] == 12 + 3 + 1  # the subsets, 3 unions at 0.1 (none at 0.5), the run
    assert list(res["ceiling"]) == ["0.1"]
    loaded = load_run(tiny_copy)
    union = np.union1d(subset(loaded, 0.1, 1), subset(loaded, 0.1, 4))
    cache = json.loads((tiny_copy / "lds" / "truth-single-val-s1.json").read_text())["entries"]
    after = retrain(
        loaded, drop=[loaded.bundle.train.ids[i] for i in union], control=None, save=False
    )
    assert cache["0.1/1+4"][0] == pytest.approx(
        after["after"]["summary"]["val_loss"]["mean"], rel=1e-6
    )
    truth, _ = ground_truth(loaded, [0.1, 0.5], 6)
    base = np.array(cache["base"])
    unions = np.stack([cache[f"0.1/{j}+{j + 3}"] for j in range(3)]) - base
    want = additive_ceiling(truth[0.1] - base, unions, draws=50, seed=loaded.cfg.seed)
    assert res["ceiling"]["0.1"] == want
    assert main(["lds", "--run-dir", str(tiny_copy), "--methods", "loss", "--fraction", "0.1",
                 "--subsets", "6", "--ceiling", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["loss", "additive ceiling"]
    assert out["additive ceiling"]["0.1"]["lds"] == pytest.approx(want["r_max"])


def test_bad_requests_are_refused_before_any_retrain(tiny_copy: Path) -> None:
    for kw, match in (({"fractions": [1.5]}, "fraction must be in"), ({"setting": "both"}, "setting must be"),
                      ({"subsets": 2}, "at least 3"), ({"methods": ["nope"]}, "unknown method"),
                      ({"methods": ["hydra:bogus=1"]}, "has no option")):  # fmt: skip
        args = {"methods": ["loss"], "save": False, **kw}
        with pytest.raises(ConfigError, match=match):
            lds(tiny_copy, **args)  # type: ignore[arg-type]
    assert not (tiny_copy / "lds").exists()


def test_cli_json_is_method_fraction_lds_ci(
    tiny_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["lds", "--run-dir", str(tiny_copy), "--methods", "loss,margin", "--fraction", "0.1,0.5",
            "--subsets", "4", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["loss", "margin"] and list(out["loss"]) == ["0.1", "0.5"]
    assert set(out["loss"]["0.1"]) == {"lds", "ci"} and len(out["loss"]["0.1"]["ci"]) == 2
