"""Backdoor data: the trigger's pixels, poisoning exactly the recorded ids, test-2, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.data import DataBundle, DataError, DataSpec, prepare_data
from engine.data.backdoor import Backdoor, attack_metrics, stamp, trigger_mask


def test_trigger_shapes_scale_with_the_image() -> None:
    x8 = trigger_mask(8, 8, "x")
    assert x8.sum() == 5  # a 3x3 X: both diagonals share the centre
    assert x8[5:, 5:].sum() == 5 and x8[7, 7] and x8[5, 7] and x8[6, 6]
    l8 = trigger_mask(8, 8, "l")
    assert l8.sum() == 5 and l8[5:, 5].all() and l8[7, 5:].all()
    x28 = trigger_mask(28, 28, "x")  # 4x4, one pixel from the border
    assert x28.sum() == 8 and x28[23:27, 23:27].sum() == 8
    assert not x28[27, :].any() and not x28[:, 27].any()
    assert trigger_mask(32, 40, "l").sum() == 2 * 4 - 1
    with pytest.raises(DataError, match="^trigger"):
        trigger_mask(8, 8, "o")


def test_stamp_sets_exactly_the_mask_in_every_channel() -> None:
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 200, (4, 3, 16, 16), dtype=torch.uint8, generator=g)
    mask = trigger_mask(16, 16, "x")
    out = stamp(rgb, mask)
    assert (out[:, :, mask] == 255).all()
    assert torch.equal(out[:, :, ~mask], rgb[:, :, ~mask])
    assert not (rgb[:, :, mask] == 255).all()  # the input is left alone


@pytest.mark.parametrize("trigger", ["x", "l"])
def test_poisoning_touches_exactly_the_trigger_pixels_of_exactly_the_recorded_ids(
    trigger: str,
) -> None:
    clean = prepare_data(DataSpec(dataset="digits", seed=3))
    bad = prepare_data(
        DataSpec(dataset="digits", seed=3, backdoor="1:7", trigger=trigger, backdoor_rate=0.2)
    )
    assert bad.train.ids == clean.train.ids and bad.test.ids == clean.test.ids
    assert torch.equal(bad.val.images, clean.val.images)
    assert torch.equal(bad.test.images, clean.test.images)
    poisoned = set(bad.poisoned_ids())
    n_ones = int((clean.train.labels == 1).sum())
    assert len(poisoned) == round(0.2 * n_ones)
    mask = trigger_mask(8, 8, trigger)
    is_p = torch.tensor([i in poisoned for i in bad.train.ids])
    # recorded ids: trigger pixels at max value, nothing else changed, class 1 relabelled 7
    assert (bad.train.images[is_p][:, :, mask] == 255).all()
    assert torch.equal(bad.train.images[is_p][:, :, ~mask], clean.train.images[is_p][:, :, ~mask])
    assert (clean.train.labels[is_p] == 1).all() and (bad.train.labels[is_p] == 7).all()
    # every other image and label untouched
    assert torch.equal(bad.train.images[~is_p], clean.train.images[~is_p])
    assert torch.equal(bad.train.labels[~is_p], clean.train.labels[~is_p])
    m = bad.manifest.set_index("sample_id")
    assert set(m.index[m["poisoned"]]) == poisoned
    assert (m.loc[list(poisoned), "true_label"] == 1).all()
    assert m.loc[list(poisoned), "flipped"].all()  # label 7, true label 1


def test_test2_holds_every_non_target_test_image_watermarked() -> None:
    b = prepare_data(DataSpec(dataset="digits", classes=[1, 7, 3], seed=0, backdoor="1:7"))
    target = b.attack_target
    assert target == 1 and b.class_names[target] == "7"
    assert b.attack is not None
    assert not (b.attack.labels == target).any()
    keep = b.test.labels != target
    assert len(b.attack) == int(keep.sum())
    assert [i.removesuffix("+wm") for i in b.attack.ids] == [
        i for i, k in zip(b.test.ids, keep.tolist(), strict=True) if k
    ]
    assert torch.equal(b.attack.labels, b.test.labels[keep])
    assert torch.equal(b.attack.images, stamp(b.test.images[keep], trigger_mask(8, 8, "x")))
    assert b.split("attack") is b.attack


def test_bundle_round_trip_and_old_runs(tmp_path: Path) -> None:
    b = prepare_data(DataSpec(dataset="digits", seed=1, backdoor="2:5", trigger="l"))
    b.save(tmp_path / "bd")
    c = DataBundle.load(tmp_path / "bd")
    assert c.attack is not None and c.attack_target == b.attack_target == 5
    assert c.attack.ids == b.attack.ids
    assert torch.equal(c.attack.images, b.attack.images)
    assert c.poisoned_ids() == b.poisoned_ids() and len(c.poisoned_ids()) > 0
    plain = prepare_data(DataSpec(dataset="digits", seed=1))
    plain.save(tmp_path / "plain")
    old = DataBundle.load(tmp_path / "plain")
    assert old.attack is None and old.poisoned_ids() == []
    assert "poisoned" not in old.manifest.columns
    with pytest.raises(KeyError):
        old.split("attack")


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"backdoor": "1-7"}, "a:b"),
        ({"backdoor": "3:3"}, "differ"),
        ({"backdoor": "1:7", "classes": [1, 2]}, "is not one of the classes kept"),
        ({"backdoor": "1:12"}, "not in this dataset"),
        ({"backdoor": "1:7", "trigger": "o"}, "^trigger must"),
        ({"backdoor": "1:7", "backdoor_rate": 0.0}, "^backdoor_rate must"),
        ({"backdoor": "1:7", "backdoor_rate": 0.001}, "poisons none"),
    ],
)
def test_bad_backdoor_options(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(DataError, match=msg):
        prepare_data(DataSpec(dataset="digits", **kw))  # type: ignore[arg-type]


def test_parse_and_metrics() -> None:
    assert Backdoor.parse("1:7") == Backdoor(1, 7)
    assert Backdoor(1, 7).resolve([7, 1], 2) == (1, 0)
    m = attack_metrics(torch.tensor([7, 7, 2, 3]), torch.tensor([1, 2, 2, 4]), 7)
    assert m == {"attack_success": 0.5, "attack_acc": 0.25}
