"""The bundled sample_data/digits: complete, loadable, and its MISLABELED.csv tells the truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from engine.data import load_source
from engine.sample_data import (
    CONFUSED_WITH,
    MISLABEL_RATE,
    N_IMAGES,
    SAMPLE_DIGITS,
    is_complete,
    main,
    make_sample_digits,
    mislabel_plan,
    read_mislabeled,
    split_plan,
)


@pytest.fixture(scope="module")
def sample() -> object:
    return load_source(f"imagefolder:{SAMPLE_DIGITS}")


def test_bundled_folder_is_complete_and_loads_every_image(sample: object) -> None:
    assert is_complete(SAMPLE_DIGITS)
    assert (SAMPLE_DIGITS / "README.md").read_text().startswith("# Sample data")
    assert len(sample.ids) == N_IMAGES == 1797  # type: ignore[attr-defined]
    assert sample.images.shape == (1797, 1, 32, 32) and sample.skipped == []  # type: ignore[attr-defined]
    assert sample.class_names == [str(i) for i in range(10)]  # type: ignore[attr-defined]


def test_images_are_the_upscaled_digits_and_mislabeled_csv_is_exact(sample: object) -> None:
    d = load_digits()
    index = [int(Path(i).stem) for i in sample.ids]  # type: ignore[attr-defined]
    assert sorted(index) == list(range(1797))
    small = sample.images[:, 0, ::4, ::4].numpy()  # type: ignore[attr-defined]
    assert np.array_equal(small, np.round(d.images[index] * 255 / 16).astype(np.uint8))
    folder = sample.labels.numpy()  # type: ignore[attr-defined]
    true = d.target[index]
    wrong = {i for i, f, t in zip(sample.ids, folder, true, strict=True) if f != t}  # type: ignore[attr-defined]
    bad = read_mislabeled()
    assert set(bad["path"]) == wrong
    assert len(bad) == round(MISLABEL_RATE * (1797 - 800)) == 150
    # systematic, as a person errs: every wrong folder is the digit's most common confusion
    assert (bad["folder_label"] == [CONFUSED_WITH[t] for t in bad["true_label"]]).all()
    rows = bad.set_index("path")
    for i, f, t in zip(sample.ids, folder, true, strict=True):  # type: ignore[attr-defined]
        if i in wrong:
            assert rows.loc[i, "true_label"] == t and rows.loc[i, "folder_label"] == f == int(
                i.split("/")[0]
            )


def test_mislabel_plan_is_seeded_and_never_keeps_the_true_class() -> None:
    y = load_digits().target
    split = split_plan(len(y))
    a, b = mislabel_plan(y, split), mislabel_plan(y, split)
    assert np.array_equal(a, b)
    assert int((a != y).sum()) == 150
    assert set(split[a != y]) == {"train"}  # validation and test stay clean
    assert (split == "val").sum() == 300 and (split == "test").sum() == 500
    assert not np.array_equal(a, mislabel_plan(y, split, seed=1))


def test_the_fixed_split_loads_with_clean_evaluation_sets_and_known_errors() -> None:
    from engine.data import DataSpec, prepare_data

    b = prepare_data(DataSpec(dataset=f"csv:{SAMPLE_DIGITS / 'splits.csv'}"))
    assert (len(b.train), len(b.val), len(b.test)) == (997, 300, 500)
    m = b.manifest
    assert int(m["flipped"].sum()) == 150
    assert set(m.loc[m["flipped"], "split"]) == {"train"}
    assert (m.loc[m["flipped"], "label"] != m.loc[m["flipped"], "true_label"]).all()


@pytest.mark.slow
def test_regenerating_gives_the_same_images(
    tmp_path: Path, sample: object, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "digits"
    assert main(["--out", str(out), "--check"]) == 0
    assert "wrote 1797 images, 150 of them" in capsys.readouterr().out
    assert is_complete(out)
    again = load_source(f"imagefolder:{out}")
    assert again.ids == sample.ids and torch.equal(again.images, sample.images)  # type: ignore[attr-defined]
    assert read_mislabeled(out).equals(read_mislabeled())
    assert main(["--out", str(out), "--check"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    next(out.glob("3/*.png")).unlink()  # incomplete -> --check regenerates
    assert not is_complete(out)
    make_sample_digits(out)
    assert is_complete(out)
