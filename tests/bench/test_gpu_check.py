"""bench/gpu_check.py skips cleanly without CUDA, and its comparisons run (a CPU-against-CPU dry run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_it_says_so_and_exits_0() -> None:
    got = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True)
    assert "no CUDA device" in got.stdout
    assert json.loads(got.stdout.strip().splitlines()[-1]) == {"skipped": True}


@pytest.mark.slow
def test_the_dry_run_compares_every_method_within_tolerance() -> None:
    got = subprocess.run(
        [sys.executable, str(SCRIPT), "--against", "cpu", "--epochs", "1", "--n-train", "300"],
        capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
    )  # fmt: skip
    out = json.loads(got.stdout.strip().splitlines()[-1])
    assert out["replay_exact_cpu"] is True
    assert set(out["methods"]) >= {"hydra", "sgd-influence", "loss"}
    assert all(m["within"] and m["relative"] == 0.0 for m in out["methods"].values())
