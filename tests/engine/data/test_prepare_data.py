"""prepare_data on the bundled digits: class subsets, subsampling, seeds, label noise."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from engine.data import DataBundle, DataError, DataSpec, load_source, prepare_data


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[int, torch.Tensor]]:
    """sample id -> (true label, image) of the whole digits source."""
    s = load_source("digits")
    return {i: (int(y), x) for i, y, x in zip(s.ids, s.labels, s.images, strict=True)}


def _all_ids(b: DataBundle) -> list[str]:
    return b.train.ids + b.val.ids + b.test.ids


def test_default_split_covers_every_sample_once(
    digits: dict[str, tuple[int, torch.Tensor]],
) -> None:
    b = prepare_data(DataSpec(dataset="digits"))
    ids = _all_ids(b)
    assert len(ids) == len(set(ids)) == len(digits) == 1797
    assert b.class_names == [str(i) for i in range(10)]
    assert list(b.manifest.columns) == [
        "sample_id",
        "split",
        "label",
        "true_label",
        "path",
        "flipped",
    ]
    assert not b.manifest["flipped"].any()
    for name in ("train", "val", "test"):
        sp = b.split(name)
        for i in range(0, len(sp), 97):
            y, x = digits[sp.ids[i]]
            assert int(sp.labels[i]) == y and torch.equal(sp.images[i], x)


def test_class_subset_is_relabelled_in_the_order_given(
    digits: dict[str, tuple[int, torch.Tensor]],
) -> None:
    b = prepare_data(DataSpec(dataset="digits", classes=[7, 1]))
    assert b.class_names == ["7", "1"] and b.n_classes == 2
    for sp in (b.train, b.val, b.test):
        assert set(sp.labels.tolist()) == {0, 1}
        originals = [digits[i][0] for i in sp.ids]
        assert [{7: 0, 1: 1}[o] for o in originals] == sp.labels.tolist()
    n17 = sum(1 for y, _ in digits.values() if y in (1, 7))
    assert len(_all_ids(b)) == n17


@pytest.mark.parametrize("classes", [[1, 10], [3, 3], [4], [-1, 2]])
def test_bad_class_lists(classes: list[int]) -> None:
    with pytest.raises(DataError, match="^classes"):
        prepare_data(DataSpec(dataset="digits", classes=classes))


def test_subsampling_sizes_and_disjointness() -> None:
    b = prepare_data(DataSpec(dataset="digits", n_train=300, n_val=50, n_test=70))
    assert (len(b.train), len(b.val), len(b.test)) == (300, 50, 70)
    assert len(set(_all_ids(b))) == 420
    assert b.manifest["split"].value_counts().to_dict() == {"train": 300, "test": 70, "val": 50}
    with pytest.raises(DataError, match="^n_train 5000 is larger"):
        prepare_data(DataSpec(dataset="digits", n_train=5000))
    with pytest.raises(DataError, match="must be positive"):
        prepare_data(DataSpec(dataset="digits", n_val=0))


def test_same_seed_same_data_other_seed_other_data() -> None:
    spec = dict(dataset="digits", n_train=200, n_val=40, n_test=40, noise=0.2)
    a, b = prepare_data(DataSpec(**spec, seed=3)), prepare_data(DataSpec(**spec, seed=3))
    pd.testing.assert_frame_equal(a.manifest, b.manifest)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(
        a.train.labels, b.train.labels
    )
    c = prepare_data(DataSpec(**spec, seed=4))
    assert a.train.ids != c.train.ids


@pytest.mark.parametrize("kind", ["uniform", "pair"])
@pytest.mark.parametrize(("rate", "n_train"), [(0.1, 500), (0.25, 333), (0.37, 101)])
def test_noise_flips_exactly_round_rate_n_and_records_them(
    digits: dict[str, tuple[int, torch.Tensor]], kind: str, rate: float, n_train: int
) -> None:
    b = prepare_data(
        DataSpec(dataset="digits", n_train=n_train, noise=rate, noise_kind=kind, seed=1)
    )
    m = b.manifest
    flipped = m[m["flipped"]]
    assert len(flipped) == round(rate * n_train)
    assert set(flipped["split"]) == {"train"}
    assert (flipped["label"] != flipped["true_label"]).all()
    assert (m.loc[~m["flipped"], "label"] == m.loc[~m["flipped"], "true_label"]).all()
    assert (m["true_label"] == [digits[i][0] for i in m["sample_id"]]).all()
    if kind == "pair":
        assert ((flipped["true_label"] + 1) % 10 == flipped["label"]).all()
    train_labels = dict(zip(b.train.ids, b.train.labels.tolist(), strict=True))
    assert all(
        train_labels[i] == lab
        for i, lab in zip(m["sample_id"], m["label"], strict=True)
        if i in train_labels
    )
    assert sorted(b.flipped_ids()) == sorted(flipped["sample_id"])


def test_pair_noise_on_a_class_subset_uses_the_new_labels() -> None:
    b = prepare_data(DataSpec(dataset="digits", classes=[3, 8], noise=0.2, noise_kind="pair"))
    f = b.manifest[b.manifest["flipped"]]
    assert len(f) == round(0.2 * len(b.train))
    assert ((f["true_label"] + 1) % 2 == f["label"]).all()


@pytest.mark.parametrize(
    ("noise", "kind", "message"),
    [(1.0, "uniform", "^noise must be"), (0.1, "swap", "^noise_kind must")],
)
def test_bad_noise_settings(noise: float, kind: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        prepare_data(DataSpec(dataset="digits", noise=noise, noise_kind=kind))


def test_bundle_round_trips_through_a_folder(tmp_path: object) -> None:
    from pathlib import Path

    b = prepare_data(DataSpec(dataset="digits", classes=[0, 1, 2], n_train=100, noise=0.1))
    b.save(Path(str(tmp_path)))
    c = DataBundle.load(Path(str(tmp_path)))
    assert c.class_names == b.class_names and c.train.ids == b.train.ids
    assert torch.equal(c.train.labels, b.train.labels) and torch.equal(c.test.images, b.test.images)
    assert c.flipped_ids() == b.flipped_ids()


def test_unknown_dataset_lists_the_choices() -> None:
    with pytest.raises(
        DataError, match="unknown dataset 'imagenet'.*cifar10.*fashion-mnist.*imagefolder"
    ):
        prepare_data(DataSpec(dataset="imagenet"))
