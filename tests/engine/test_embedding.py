"""engine.embedding: penultimate features at the final weights, PCA now, UMAP cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.embedding import (
    compute_embedding,
    embedding_path,
    has_embedding,
    load_embedding,
    training_features,
)
from engine.loading import load_run
from engine.problem import split_logits
from engine.train import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("emb") / "run"
    spec = DataSpec(
        dataset="digits", classes=[1, 7, 3], n_train=90, n_val=30, n_test=30, noise=0.1, seed=0
    )
    cfg = TrainConfig(model="mlp", widths=[16, 8], epochs=2, batch_size=16, lr=0.05, seed=0)
    train(run_dir, spec, cfg)
    return run_dir


def test_features_are_the_input_of_the_last_layer(tiny_run: Path) -> None:
    ids, feats = training_features(tiny_run)
    loaded = load_run(tiny_run)
    assert ids == list(loaded.bundle.train.ids)
    assert feats.shape == (len(ids), 8)
    theta = loaded.final_theta
    last = sorted({k.split(".")[0] for k in theta}, key=int)[-1]
    w, b = theta[f"{last}.weight"], theta[f"{last}.bias"]
    logits = split_logits(loaded.problem, theta, loaded.bundle.train)
    rebuilt = torch.as_tensor(feats, dtype=w.dtype) @ w.T + b
    torch.testing.assert_close(rebuilt, logits, rtol=1e-4, atol=1e-4)
    # cached: a second call reads the same numbers back
    _, again = training_features(tiny_run)
    np.testing.assert_array_equal(again, feats)


def test_pca_map_is_cached_and_loaded(tiny_run: Path) -> None:
    seen: list[tuple[int, int]] = []
    df = compute_embedding(tiny_run, method="pca", progress=lambda d, t, _l: seen.append((d, t)))
    assert list(df.columns) == ["sample_id", "x", "y", "method"]
    assert len(df) == 90 and set(df["method"]) == {"pca"}
    assert np.isfinite(df[["x", "y"]].to_numpy()).all()
    assert df["x"].var() >= df["y"].var() > 0  # first component carries the most variance
    assert seen[-1] == (3, 3)
    assert has_embedding(tiny_run, "pca")
    back = load_embedding(tiny_run)
    pd.testing.assert_frame_equal(back, df)


def test_load_embedding_computes_pca_when_nothing_is_cached(tmp_path: Path, tiny_run: Path) -> None:
    emb = embedding_path(tiny_run, "pca")
    if emb.exists():
        emb.unlink()
    df = load_embedding(tiny_run)
    assert set(df["method"]) == {"pca"} and emb.is_file()


def test_unknown_method_is_a_config_error(tiny_run: Path) -> None:
    with pytest.raises(ConfigError, match="embedding method"):
        compute_embedding(tiny_run, method="tsne")


@pytest.mark.slow
def test_umap_map_replaces_pca(tiny_run: Path) -> None:
    df = compute_embedding(tiny_run, method="umap")
    assert len(df) == 90 and set(df["method"]) == {"umap"}
    assert np.isfinite(df[["x", "y"]].to_numpy()).all()
    assert load_embedding(tiny_run)["method"].iloc[0] == "umap"
    assert load_embedding(tiny_run, method="pca")["method"].iloc[0] == "pca"
