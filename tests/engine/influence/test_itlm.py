"""ITLM: the refit helper replays training exactly; rounds drop the high-loss (flipped) samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.influence.itlm import fit_subset, itlm_flagged, itlm_run, training_losses
from engine.influence.methods import get_method, run_method
from engine.influence.queries import Query
from engine.loading import LoadedRun, load_run
from engine.train import train


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    """Digits 1 vs 7, 60 training samples with 15% flipped labels, an augmented mlp."""
    d = tmp_path_factory.mktemp("itlm") / "noisy"
    spec = DataSpec(
        dataset="digits", classes=[1, 7], n_train=60, n_val=20, n_test=10, noise=0.15, seed=3
    )
    cfg = TrainConfig(
        model="mlp",
        widths=[8],
        epochs=8,
        batch_size=10,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-3,
        schedule="step",
        step_epochs=4,
        augment_shift=1,
        seed=3,
        device="cpu",
    )
    train(d, spec, cfg)
    return load_run(d)


def test_fit_on_all_samples_reproduces_training(noisy: LoadedRun) -> None:
    theta = fit_subset(noisy, np.arange(noisy.problem.x.shape[0]))
    for k, t in noisy.final_theta.items():
        assert torch.equal(theta[k], t)


def test_flags_what_the_last_round_drops(noisy: LoadedRun) -> None:
    losses, flagged = itlm_run(noisy, rounds=2, keep=0.85)
    n = noisy.problem.x.shape[0]
    n_drop = n - int(np.ceil(0.85 * n))
    assert len(flagged) == n_drop
    assert losses[flagged].min() >= np.delete(losses, flagged).max()
    scores = run_method("itlm", noisy, Query("val"), rounds=2, keep=0.85)
    np.testing.assert_allclose(scores[:, 0], -losses)  # high loss = most negative
    assert set(np.argsort(scores[:, 0])[:n_drop]) == set(flagged.tolist())
    ids = itlm_flagged(noisy, rounds=2, keep=0.85)
    assert ids == [noisy.bundle.train.ids[i] for i in flagged]
    # the flipped labels are what it finds
    flipped = set(noisy.bundle.flipped_ids())
    assert len(flipped & set(ids)) >= 0.6 * len(flipped)


def test_refit_lowers_the_loss_of_the_kept_samples(noisy: LoadedRun) -> None:
    before = training_losses(noisy, noisy.final_theta)
    kept = np.sort(np.argsort(before)[:50])
    after = training_losses(noisy, fit_subset(noisy, kept))
    assert after[kept].mean() < before[kept].mean()


def test_options_are_checked(noisy: LoadedRun) -> None:
    assert not get_method("itlm").uses_query
    with pytest.raises(ConfigError):
        itlm_run(noisy, rounds=0)
    with pytest.raises(ConfigError):
        itlm_run(noisy, keep=1.5)
    with pytest.raises(ConfigError):
        fit_subset(noisy, np.array([], dtype=np.int64))


def test_default_options_score_every_sample(noisy: LoadedRun) -> None:
    s = run_method("itlm", noisy, Query("val"), rounds=1)
    assert s.shape == (noisy.problem.x.shape[0], 1) and np.isfinite(s).all() and (s <= 0).all()
