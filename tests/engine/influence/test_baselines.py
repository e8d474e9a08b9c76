"""Query-free baselines: shapes, orientation (negative = suspicious), seeds, and that the label
baselines find injected label noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.influence.baselines import (
    confident_learning_issues,
    logit_margin,
    out_of_fold_probabilities,
)
from engine.influence.methods import get_method, run_method
from engine.influence.queries import Query
from engine.loading import LoadedRun, load_run
from engine.models import per_sample_loss
from engine.problem import penultimate_features, split_logits
from engine.train import train

BASELINES = ("loss", "margin", "random", "isolation-forest", "autoencoder", "confident-learning")


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    """Digits 1, 7, 3 (softmax), 90 training samples with 15% flipped labels."""
    d = tmp_path_factory.mktemp("baselines") / "noisy"
    spec = DataSpec(
        dataset="digits", classes=[1, 7, 3], n_train=90, n_val=30, n_test=15, noise=0.15, seed=2
    )
    cfg = TrainConfig(
        model="mlp",
        widths=[16],
        epochs=10,
        batch_size=10,
        lr=0.1,
        momentum=0.9,
        seed=2,
        device="cpu",
    )
    train(d, spec, cfg)
    return load_run(d)


def _flipped(loaded: LoadedRun) -> np.ndarray:
    m = loaded.bundle.manifest.set_index("sample_id")
    return m.loc[loaded.bundle.train.ids, "flipped"].to_numpy(dtype=bool)


@pytest.mark.parametrize("name", BASELINES)
def test_shape_and_registry(noisy: LoadedRun, name: str) -> None:
    assert not get_method(name).uses_query
    opts = {"epochs": 3} if name in ("autoencoder", "confident-learning") else {}
    s = run_method(name, noisy, Query("val"), **opts)
    assert s.shape == (noisy.problem.x.shape[0], 1) and np.isfinite(s).all()


def test_loss_and_margin(noisy: LoadedRun) -> None:
    logits = split_logits(noisy.problem, noisy.final_theta, noisy.bundle.train)
    y = noisy.bundle.train.labels
    loss = run_method("loss", noisy, Query("val"))[:, 0]
    np.testing.assert_allclose(loss, -per_sample_loss(logits, y).double().numpy(), rtol=1e-6)
    margin = run_method("margin", noisy, Query("val"))[:, 0]
    wrong = (logits.argmax(1) != y).numpy()
    assert ((margin < 0) == wrong).all()  # misclassified = negative margin
    for label_noise_score in (loss, margin):
        assert roc_auc_score(_flipped(noisy), -label_noise_score) > 0.8


def test_margin_binary_and_multiclass() -> None:
    z = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    np.testing.assert_allclose(logit_margin(z, torch.tensor([0, 0])).numpy(), [1.5, -3.0])
    zb = torch.tensor([[1.5], [-0.5]])
    np.testing.assert_allclose(logit_margin(zb, torch.tensor([1, 1])).numpy(), [1.5, -0.5])
    np.testing.assert_allclose(logit_margin(zb, torch.tensor([0, 0])).numpy(), [-1.5, 0.5])


def test_random_is_seeded(noisy: LoadedRun) -> None:
    a = run_method("random", noisy, Query("val"), seed=4)
    assert np.array_equal(a, run_method("random", noisy, Query("val"), seed=4))
    assert not np.array_equal(a, run_method("random", noisy, Query("val"), seed=5))


def test_isolation_forest_marks_far_features_negative(noisy: LoadedRun) -> None:
    feats = penultimate_features(noisy.problem, noisy.final_theta).double().numpy()
    assert feats.shape == (noisy.problem.x.shape[0], 16)
    s = run_method("isolation-forest", noisy, Query("val"))[:, 0]
    dist = np.linalg.norm((feats - feats.mean(0)) / (feats.std(0) + 1e-9), axis=1)
    assert spearmanr(s, dist).statistic < -0.3
    assert np.array_equal(s, run_method("isolation-forest", noisy, Query("val"))[:, 0])


def test_autoencoder_scores_are_minus_errors(noisy: LoadedRun) -> None:
    s = run_method("autoencoder", noisy, Query("val"), epochs=5)[:, 0]
    assert (s <= 0).all()
    assert np.array_equal(s, run_method("autoencoder", noisy, Query("val"), epochs=5)[:, 0])


def test_confident_learning_finds_flipped_labels(noisy: LoadedRun) -> None:
    probs = out_of_fold_probabilities(noisy, folds=3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    s = run_method("confident-learning", noisy, Query("val"), folds=3)[:, 0]
    assert (s <= 0).all() and (s >= -1).all()
    flipped = _flipped(noisy)
    assert roc_auc_score(flipped, -s) > 0.8
    issues = confident_learning_issues(noisy, folds=3)
    ids = np.array(noisy.bundle.train.ids)
    assert len(set(issues) & set(ids[flipped])) >= len(issues) / 2
    with pytest.raises(ConfigError):
        out_of_fold_probabilities(noisy, folds=1)
