"""True leave-one-out by stacked counterfactual SGD equals engine.sgd's weighted replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import TrainConfig
from engine.data import DataSpec
from engine.experiments.loo import counterfactual_finals, loo_changes
from engine.influence.queries import Query, query_losses
from engine.loading import LoadedRun, load_run
from engine.sgd import run_steps
from engine.train import train


def _run(root: Path, name: str, **cfg: object) -> LoadedRun:
    base: dict[str, object] = dict(
        model="mlp",
        widths=[4],
        epochs=2,
        batch_size=6,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-3,
        schedule="cosine",
        dtype="float64",
        seed=1,
        device="cpu",
    )
    base.update(cfg)
    spec = DataSpec(dataset="digits", classes=[1, 7, 3], n_train=24, n_val=12, n_test=6, seed=1)
    train(root / name, spec, TrainConfig(**base))  # type: ignore[arg-type]
    return load_run(root / name)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> LoadedRun:
    """Softmax over 3 classes, momentum, weight decay and a cosine schedule."""
    return _run(tmp_path_factory.mktemp("loo"), "mlp")


def _reference(loaded: LoadedRun, k: int, query: Query) -> np.ndarray:
    theta, v = loaded.traj.load_checkpoint(0)
    w = torch.ones(loaded.problem.x.shape[0], dtype=torch.float64)
    w[k] = 0.0
    run_steps(loaded.problem, loaded.traj, theta, v, start=0, stop=loaded.traj.n_steps, weights=w)
    return (
        (query_losses(loaded, query, theta) - query_losses(loaded, query, loaded.final_theta))
        .detach()
        .numpy()
    )


def test_unchanged_run_reproduces_the_final_weights(run: LoadedRun) -> None:
    finals = counterfactual_finals(run, [None])
    for k, t in run.final_theta.items():
        assert torch.allclose(finals[k][0], t, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["val", "class"])
def test_matches_weighted_replay_for_every_sample(run: LoadedRun, kind: str) -> None:
    q = Query(kind)
    got = loo_changes(run, q, chunk=5)  # several chunks, one of them partial
    assert got.shape == (run.problem.x.shape[0], 3 if kind == "class" else 1)
    for k in (0, 7, 23):
        np.testing.assert_allclose(got[k], _reference(run, k, q), rtol=1e-9, atol=1e-14)
    assert np.abs(got).max() > 0


def test_subset_and_chunking_agree(run: LoadedRun) -> None:
    full = loo_changes(run, chunk=100)
    part = loo_changes(run, samples=[3, 11, 17], chunk=2)
    np.testing.assert_allclose(part, full[[3, 11, 17]], rtol=1e-12, atol=1e-16)


def test_float32_run_is_computed_in_float64(tmp_path: Path) -> None:
    loaded = _run(
        tmp_path, "f32", dtype="float32", binary=False, epochs=1, augment_shift=1, augment_flip=True
    )
    got = loo_changes(loaded, samples=[2])
    assert got.dtype == np.float64 and np.isfinite(got).all()
    finals = counterfactual_finals(loaded, [None])
    assert all(t.dtype == torch.float64 for t in finals.values())
    for k, t in loaded.final_theta.items():  # float32 training vs float64 replay: close, not equal
        assert torch.allclose(finals[k][0].float(), t, atol=1e-4)
