"""Trusted labels: a person's checks of validation / test labels, and what they change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.fingerprint import run_fingerprint
from engine.influence.api import compute_influence
from engine.loading import load_run
from engine.recommend import recommend
from engine.review import review_queue
from engine.train import train
from engine.trusted import (
    forget_trusted,
    load_trusted,
    set_trusted,
    trusted_counts,
)


@pytest.fixture
def run(tiny_copy: Path) -> Path:
    return tiny_copy


def test_checked_labels_are_saved_validated_and_forgotten(run: Path) -> None:
    b = load_run(run).bundle
    v, t = b.val.ids[0], b.test.ids[0]
    assert load_trusted(run) == {}
    set_trusted(run, {v: 3, t: int(b.test.labels[0])})
    assert load_trusted(run) == {v: 3, t: int(b.test.labels[0])}
    counts = trusted_counts(run)
    assert counts["val"]["checked"] == 1 and counts["test"] == {"checked": 1, "corrected": 0}
    assert counts["val"]["corrected"] == int(int(b.val.labels[0]) != 3)
    with pytest.raises(ConfigError, match="is a training sample"):
        set_trusted(run, {b.train.ids[0]: 1})
    with pytest.raises(ConfigError, match="not a class index"):
        set_trusted(run, {v: 99})
    assert forget_trusted(run, [t]) == {v: 3}


def test_the_run_uses_them_validation_becomes_the_checked_images(run: Path) -> None:
    given = load_run(run).bundle
    fp = run_fingerprint(run)
    vals = given.val.ids[:5]
    t0 = given.test.ids[2]
    new_t = (int(given.test.labels[2]) + 1) % given.n_classes
    set_trusted(run, {**{i: 1 for i in vals}, t0: new_t})
    b = load_run(run).bundle
    assert b.val.ids == vals and b.val.labels.tolist() == [1] * 5
    assert torch.equal(b.val.images, given.val.images[:5])
    assert len(b.test) == len(given.test) and int(b.test.labels[2]) == new_t
    assert load_run(run, trusted=False).bundle.val.ids == given.val.ids
    assert run_fingerprint(run) != fp  # stored scores become stale


def _shared_error_folder(root: Path, *, rate: float = 0.45) -> Path:
    """All 1,797 digits as 8x8 PNGs; in *every* split, `rate` of the 7s, 4s and 3s are filed as
    1, 9 and 8 (a labeller's systematic confusion); MISLABELED.csv lists them."""
    d, rng = load_digits(), np.random.default_rng(0)
    pairs, rows = {7: 1, 4: 9, 3: 8}, []
    for i, (img, y) in enumerate(zip(d.images, d.target, strict=True)):
        f = pairs[int(y)] if int(y) in pairs and rng.random() < rate else int(y)
        (root / str(f)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(img * 255 / 16).astype(np.uint8)).save(root / f"{f}/{i:04d}.png")
        if f != y:
            rows.append((f"{f}/{i:04d}.png", int(y), f))
    pd.DataFrame(rows, columns=["path", "true_label", "folder_label"]).to_csv(
        root / "MISLABELED.csv", index=False
    )
    return root


@pytest.mark.slow
def test_trusting_a_few_dozen_validation_labels_finds_a_shared_error_better(
    tmp_path: Path,
) -> None:
    """Validation shares the training set's systematic error: its influence defends the errors.
    48 checked validation labels (from the review queue) fix the query and the recommendation."""
    folder = _shared_error_folder(tmp_path / "folder")
    run = tmp_path / "run"
    train(
        run,
        DataSpec(dataset=f"imagefolder:{folder}", val_fraction=0.2, test_fraction=0.2, seed=0),
        TrainConfig(model="mlp", widths=[32], epochs=10, batch_size=32, lr=0.05, momentum=0.9),
    )
    loaded = load_run(run)
    m = loaded.bundle.manifest.set_index("sample_id")
    flipped = m.loc[loaded.bundle.train.ids, "flipped"].to_numpy(bool)
    assert m.loc[loaded.bundle.val.ids, "flipped"].sum() > 30  # validation is wrong the same way
    methods = ["hydra", "margin", "loss"]

    def measure() -> tuple[float, dict]:  # type: ignore[type-arg]
        s = compute_influence(run, "hydra", overwrite=True).score.to_numpy()
        return roc_auc_score(flipped, -s), recommend(run, methods=methods, k=100, save=False)

    auc_given, rec_given = measure()
    queue = review_queue(run, "val")[:48]
    set_trusted(run, {i: int(m.loc[i, "true_label"]) for i in queue})
    auc_trusted, rec_trusted = measure()
    assert rec_trusted["judged_on"]["trusted"] and rec_trusted["judged_on"]["n"] == 48
    assert "person-checked" in rec_trusted["why"]
    # the query: validation-loss influence finds the shared error better
    assert auc_trusted > auc_given + 0.05, (auc_given, auc_trusted)
    # the recommendation: removing the label-error ranking's top images raised the loss on the
    # wrongly labelled validation images (they defend the errors) and lowers it on checked ones
    margin = lambda rec: next(r for r in rec["table"] if r["method"] == "margin")  # noqa: E731
    assert margin(rec_given)["d_val_loss"] > 0 > margin(rec_trusted)["d_val_loss"]
    # what it recommends to drop holds more of the errors than the same method's top k did
    # when its scores were fitted to the wrong validation labels
    prec = lambda rec: float(np.mean([m.loc[i, "flipped"] for i in rec["drop"]]))  # noqa: E731
    best = rec_trusted["method"]
    assert best is not None
    before = next(r for r in rec_given["table"] if r["method"] == best)["precision"]
    assert prec(rec_trusted) > before, (best, before, prec(rec_trusted))
    # label-only: a run nobody checked can still ask for methods that ignore validation labels
    only = recommend(run, methods=methods, k=100, label_only=True, save=False)
    assert {r["method"] for r in only["table"]} == {"margin", "loss"}


def test_the_proof_uses_checked_test_labels_and_says_so(run: Path) -> None:
    from engine.retrain import retrain

    b = load_run(run).bundle
    plain = retrain(run, mode="all", control=None, save=False)
    wrong = {
        sid: (int(y) + 1) % b.n_classes
        for sid, y in zip(b.test.ids[:20], b.test.labels.tolist()[:20], strict=True)
    }
    set_trusted(run, wrong)
    res = retrain(run, mode="all", control=None, save=False)
    assert (
        res["n_test_checked"] == 20 and "(20 of their labels checked by a person)" in res["verdict"]
    )
    before = res["before"]["runs"][0]["test_acc"]
    assert before < plain["before"]["runs"][0]["test_acc"]  # the same model, judged on other labels
