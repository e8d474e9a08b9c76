"""Disk full (ENOSPC) and permission errors (EACCES) while training and scoring, injected in the
write path (tests run as root, so chmod cannot do it): one clear message naming the file, the
files saved before are intact, no temporary file is left, and after the fault is gone the work
continues (resume / re-run) to the same result."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from engine.runs import read_json
from tests.reliability.conftest import error_line, leftovers, snapshot, write_fault

Cli = Callable[..., tuple[int, str, str]]
TRAIN = ["--dataset", "digits", "--classes", "1,7", "--n-train", "80", "--model", "mlp", "--widths",
         "16", "--epochs", "4", "--batch-size", "10", "--checkpoint-every", "4"]  # fmt: skip


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_fault_while_training_then_resume_gives_the_same_weights(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    from engine.loading import load_run

    run, clean = tmp_path / "run", tmp_path / "clean"
    # The 4th checkpoint fails, and the disk stays full: every write after it fails too.
    with write_fault(monkeypatch, r"^\.?ckpt", err=err, after=3, sticky=True) as fault:
        rc, _, errtext = cli("train", *TRAIN, "--run-dir", run)
    assert rc == 1 and fault.hits
    line = error_line(errtext)
    what = "the disk is full" if err == errno.ENOSPC else "permission denied"
    assert (
        f"{what} on {run}/trajectory/ckpt-" in line and "nothing saved before was changed" in line
    )
    assert leftovers(run) == []
    meta = read_json(run / "trajectory" / "meta.json")
    assert meta["checkpoints"] == [0, 4, 8] and meta["logged_steps"] == 8
    assert read_json(run / "status.json")["state"] == "running"  # the failure could not be saved
    saved = snapshot(run)
    from engine.trajectory import Trajectory

    Trajectory(run / "trajectory").load_checkpoint(8)  # the last good checkpoint reads back

    rc, _, errtext = cli("resume", "--run-dir", run)  # the disk has room again
    assert rc == 0, errtext
    after = snapshot(run)
    for name in (
        "config.json",
        "data.safetensors",
        "manifest.csv",
        "trajectory/ckpt-00000004.safetensors",
    ):
        if name in saved:
            assert after[name][0] == saved[name][0], name
    assert cli("train", *TRAIN, "--run-dir", clean)[0] == 0
    a, b = load_run(run), load_run(clean)
    assert all(torch.equal(a.final_theta[k], b.final_theta[k]) for k in a.final_theta)
    assert read_json(run / "status.json")["state"] == "done"


@pytest.mark.parametrize(
    ("err", "pattern"),
    [
        (errno.ENOSPC, r"scores\.csv"),
        (errno.EACCES, r"scores\.csv"),
        (errno.ENOSPC, r"params\.json"),
    ],
)
def test_fault_while_scoring_keeps_the_other_scores(
    cli: Cli, victim: Path, monkeypatch: pytest.MonkeyPatch, err: int, pattern: str
) -> None:
    from engine.influence.api import list_scores, load_scores

    before = snapshot(victim)
    with write_fault(monkeypatch, pattern, err=err):
        rc, _, errtext = cli("influence", "--run-dir", victim, "--method", "margin")
    assert rc == 1
    line = error_line(errtext)
    target = "scores.csv" if "scores" in pattern else "params.json"
    assert f"on {victim}/influence/margin/val/{target}" in line
    assert leftovers(victim) == []
    after = snapshot(victim)
    assert {k: v for k, v in after.items() if k in before} == before, "saved files were changed"
    # scores.csv may be there without its params.json, but nothing lists or serves it
    assert set(after) - set(before) <= {"influence/margin/val/scores.csv"}
    assert sorted(s["method"] for s in list_scores(victim)) == ["loss", "tracin"]
    with pytest.raises(Exception, match="no margin scores"):
        load_scores(victim, "margin")

    rc, _, errtext = cli("influence", "--run-dir", victim, "--method", "margin")  # room again
    assert rc == 0, errtext
    assert len(load_scores(victim, "margin")) == 60


def test_fault_while_saving_selections_keeps_the_old_ones(
    victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.selections import load_selections, set_drop

    ids = list(__import__("pandas").read_csv(victim / "manifest.csv")["sample_id"][:2])
    set_drop(victim, [ids[0]], True)
    with (
        write_fault(monkeypatch, r"selections\.json"),
        pytest.raises(OSError, match="selections.json"),
    ):
        set_drop(victim, [ids[1]], True)
    assert load_selections(victim).drop == {ids[0]}
    assert leftovers(victim) == []
