"""Export: the ticked-samples table and cleaned label files in each input format."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engine.config import TrainConfig
from engine.export import cleaned_labels, export_selection, run_predictions
from engine.job_worker import run_inline
from engine.selections import set_drop, set_relabel
from engine.train import train

CFG = TrainConfig(model="logreg", epochs=1, batch_size=10, lr=0.1)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.data import DataSpec

    run = tmp_path_factory.mktemp("exp") / "run"
    train(run, DataSpec(dataset="digits", classes=[1, 7], n_train=40, n_val=20, n_test=20), CFG)
    run_inline("influence", run, {"method": "tracin", "query": "val"})
    return run


def test_export_selection_lists_ticks_with_labels_predictions_and_scores(digits_run: Path) -> None:
    man = pd.read_csv(digits_run / "manifest.csv", dtype={"sample_id": str})
    tr = man[man["split"] == "train"]
    a, b = tr["sample_id"].iloc[0], tr["sample_id"].iloc[1]
    set_drop(digits_run, [a], True)
    set_relabel(digits_run, b, 0)
    df = export_selection(digits_run)
    assert list(df["sample_id"]) == sorted([a, b])
    row = df.set_index("sample_id")
    assert row.at[a, "action"] == "drop" and row.at[b, "action"] == "relabel"
    assert row.at[b, "new_label"] == "1"  # class 0 of the run is digit 1
    assert row.at[a, "given_label"] == str([1, 7][int(tr["label"].iloc[0])])
    assert row.at[a, "method"] == "tracin" and np.isfinite(row.at[a, "score"])
    pred = run_predictions(digits_run).set_index("sample_id")
    assert row.at[a, "predicted_label"] == str([1, 7][int(pred.at[a, "predicted"])])
    flagged = export_selection(digits_run, top_k=5)
    assert (flagged["action"] == "flag").sum() >= 3
    name, data = cleaned_labels(digits_run)
    out = pd.read_csv(io.BytesIO(data), dtype={"sample_id": str, "label": str})
    assert name.endswith(".csv") and list(out.columns) == ["sample_id", "label"]
    assert a not in set(out["sample_id"]) and len(out) == len(man) - 1
    assert out.set_index("sample_id").at[b, "label"] == "1"


def test_cleaned_csv_keeps_the_source_format(tmp_path: Path) -> None:
    from PIL import Image

    from engine.data import DataSpec

    rows = ["path,label,note"]
    rng = np.random.default_rng(0)
    for i in range(40):
        lab = ["cat", "dog"][i % 2]
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
        rows.append(f"im{i}.png,{lab},n{i}")
    src = tmp_path / "labels.csv"
    src.write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    train(run, DataSpec(dataset=f"csv:{src}", val_fraction=0.2, test_fraction=0.2), CFG)
    set_drop(run, ["im0.png"], True)
    set_relabel(run, "im1.png", 0)  # dog -> cat
    name, data = cleaned_labels(run)
    assert name == "labels-cleaned.csv"
    out = pd.read_csv(io.BytesIO(data))
    assert list(out.columns) == ["path", "label", "note"] and len(out) == 39
    assert "im0.png" not in set(out["path"])
    assert out.set_index("path").at["im1.png", "label"] == "cat"
    assert out.set_index("path").at["im3.png", "label"] == "dog"


def test_predictions_are_saved_once_and_recomputed_when_the_run_changes(
    digits_run: Path, tmp_path: Path
) -> None:
    import os
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    for name in ("predictions.csv", "predictions.json"):
        (run / name).unlink(missing_ok=True)
    first = run_predictions(run)
    assert (run / "predictions.csv").is_file()
    saved = pd.read_csv(run / "predictions.csv")
    saved.loc[0, "confidence"] = 0.123  # a marker: read back, not recomputed
    saved.to_csv(run / "predictions.csv", index=False)
    again = run_predictions(run)
    assert again.loc[0, "confidence"] == 0.123
    pd.testing.assert_frame_equal(again.drop(index=0), first.drop(index=0))

    st = (run / "status.json").stat()  # as if retrained: a new status.json
    os.utime(run / "status.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    pd.testing.assert_frame_equal(run_predictions(run), first)

    (run / "predictions.csv").write_text("not,a\npredictions,file\n")  # damaged: computed again
    pd.testing.assert_frame_equal(run_predictions(run), first)
