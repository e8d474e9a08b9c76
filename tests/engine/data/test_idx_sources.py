"""fashion-mnist and mnist from tiny IDX files the test writes; mnist / cifar10 offline errors."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import DataError, DataSpec, SourceOptions, load_source, prepare_data
from engine.data.sources.torchvision_sets import (
    FASHION_CLASSES,
    SYSTEM_FASHION_DIR,
    find_idx_files,
    reachable,
    read_idx,
)


def idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(np.uint8).tobytes()


def write_idx_set(
    folder: Path,
    *,
    n_train: int = 30,
    n_test: int = 10,
    gz: bool = True,
    hw: tuple[int, int] = (6, 5),
) -> dict[str, np.ndarray]:
    """The four MNIST-style files with random pixels and labels 0..9; returns the arrays written."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *hw)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *hw)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        data = idx_bytes(a)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def test_fashion_mnist_from_gzipped_idx(tmp_path: Path) -> None:
    arrays = write_idx_set(tmp_path)
    s = load_source("fashion-mnist", SourceOptions(data_dir=str(tmp_path), download=False))
    assert s.class_names == FASHION_CLASSES and s.class_names[0] == "T-shirt/top"
    assert s.images.shape == (40, 1, 6, 5) and s.images.dtype == torch.uint8
    assert s.ids[0] == "fashion-mnist-train-00000" and s.ids[-1] == "fashion-mnist-test-00009"
    assert s.split == ["train"] * 30 + ["test"] * 10
    assert np.array_equal(s.images[:30, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert s.labels[30:].tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


@pytest.mark.parametrize("layout", ["plain", "raw", "torchvision"])
def test_idx_layouts(tmp_path: Path, layout: str) -> None:
    sub = {
        "plain": tmp_path,
        "raw": tmp_path / "raw",
        "torchvision": tmp_path / "FashionMNIST" / "raw",
    }[layout]
    write_idx_set(sub, gz=layout != "plain")
    assert find_idx_files(tmp_path) is not None
    s = load_source("fashion-mnist", SourceOptions(data_dir=str(tmp_path), download=False))
    assert len(s.ids) == 40


def test_prepare_keeps_the_source_test_split_and_carves_validation(tmp_path: Path) -> None:
    write_idx_set(tmp_path, n_train=100, n_test=20)
    b = prepare_data(DataSpec(dataset="fashion-mnist", data_dir=str(tmp_path), val_fraction=0.2))
    assert sorted(b.test.ids) == [f"fashion-mnist-test-{i:05d}" for i in range(20)]
    assert len(b.val) == 20 and len(b.train) == 80
    assert all(i.startswith("fashion-mnist-train-") for i in b.val.ids + b.train.ids)


def test_mnist_reads_idx_files_from_data_dir(tmp_path: Path) -> None:
    write_idx_set(tmp_path / "MNIST" / "raw")
    s = load_source("mnist", SourceOptions(data_dir=str(tmp_path), download=False))
    assert s.class_names == [str(i) for i in range(10)] and s.ids[0] == "mnist-train-00000"


def test_broken_idx_files_name_the_file(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02"))  # says 5, holds 2
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*holds 2"):
        load_source("fashion-mnist", SourceOptions(data_dir=str(tmp_path), download=False))
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: cannot read"):
        load_source("fashion-mnist", SourceOptions(data_dir=str(tmp_path), download=False))
    (tmp_path / "x.idx").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "x.idx")
    (tmp_path / "y.idx").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")
    with pytest.raises(DataError, match="not unsigned byte"):
        read_idx(tmp_path / "y.idx")


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"dataset-fashion-mnist \(make data\).*--data-dir.*train-images-idx3-ubyte.gz",
    ):
        load_source("fashion-mnist", SourceOptions(data_dir=str(tmp_path), download=False))


def _offline(url: str) -> None:
    if reachable(url, timeout=3):
        pytest.skip("the network is reachable; this test checks the offline error")


def test_mnist_offline_fails_fast_with_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline("https://ossci-datasets.s3.amazonaws.com/mnist/")
    monkeypatch.setenv("RETRACER_CACHE", str(tmp_path / "cache"))
    t = time.perf_counter()
    with pytest.raises(
        DataError, match=r"mnist: .*download failed.*train-images-idx3-ubyte.gz.*--data-dir"
    ):
        load_source("mnist")
    assert time.perf_counter() - t < 30


def test_cifar10_offline_fails_fast_with_instructions(tmp_path: Path) -> None:
    _offline("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
    t = time.perf_counter()
    with pytest.raises(
        DataError, match=r"cifar10: .*download failed.*cifar-10-python.tar.gz.*--data-dir"
    ):
        load_source("cifar10", SourceOptions(data_dir=str(tmp_path / "c10")))
    assert time.perf_counter() - t < 30


def test_downloads_off_gives_the_same_instructions(tmp_path: Path) -> None:
    for name, file in (
        ("mnist", "train-images-idx3-ubyte.gz"),
        ("cifar10", "cifar-10-python.tar.gz"),
    ):
        with pytest.raises(DataError, match=f"downloading is off.*{file}.*--data-dir"):
            load_source(name, SourceOptions(data_dir=str(tmp_path / name), download=False))


@pytest.mark.slow
@pytest.mark.skipif(
    find_idx_files(SYSTEM_FASHION_DIR) is None,
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_real_fashion_mnist_from_the_debian_package() -> None:
    s = load_source("fashion-mnist", SourceOptions(download=False))
    assert s.images.shape == (70_000, 1, 28, 28)
    assert s.split.count("train") == 60_000 and s.split.count("test") == 10_000
    assert torch.bincount(s.labels).tolist() == [7000] * 10
    assert s.ids[42] == "fashion-mnist-train-00042"
