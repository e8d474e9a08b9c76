"""Retracer at real size, next to a plain torchvision ImageFolder + DataLoader loop, in one process.

    OMP_NUM_THREADS=1 .venv/bin/python bench/scale.py [--sets rgb32,rgb96,fmnist] [--epochs 1]
        [--skip-exact] [--work runs/scale] [--app-pages]

Sets: ``rgb32`` an ImageFolder of 50,000 RGB 32x32 PNGs, ``rgb96`` one of 5,000 RGB 96x96 PNGs
(both colourised Fashion-MNIST, written once by bench/common.colour_folder), ``fmnist`` the full
Fashion-MNIST from its IDX files (no folder; no plain-loop row). For each: preparing the data
(decoding into uint8 storage, in parallel); training LeNet-5 with trajectory logging; the warm-up
that `retracer train` and the app's job run after training (engine.warmup: the final predictions
and the PCA map); the Hessian-free pass (hydra); the exact pass (sgd-influence); hydra's
projected index for the Test sample page (d = 2048, built from the stored run like the app's
job); and the plain loop: torchvision's ImageFolder (ToTensor) and a DataLoader (2 workers,
shuffled, batch as ours) training the same architecture with torch.optim.SGD for the same epochs,
no logging. Time, images per second and peak resident memory above the level before each step
(sampled every 5 ms) are printed side by side; the last line is JSON. With --app-pages the
scores are stored and bench/app_pages.py times the app on the run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import PeakRSS, colour_folder

FMNIST = "/usr/share/datasets/fashion-mnist"
BATCH, LR, MOMENTUM = 64, 0.01, 0.9


def measured(fn: Any) -> tuple[Any, float, float]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        sec = time.perf_counter() - t0
    return out, sec, mem.peak_mb


def plain_loop(root: Path, epochs: int, input_shape: tuple[int, int, int], n_classes: int) -> int:
    """torchvision ImageFolder + DataLoader, the same LeNet-5, SGD with momentum; images seen."""
    from torchvision import datasets, transforms

    from engine.models import build_model, per_sample_loss

    ds = datasets.ImageFolder(str(root), transform=transforms.ToTensor())
    dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=2)
    torch.manual_seed(0)
    model = build_model("lenet5", input_shape=input_shape, n_outputs=n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=1e-4)
    seen = 0
    for _ in range(epochs):
        for x, y in dl:
            loss = per_sample_loss(model(x), y).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
    return seen


def app_pages(run: Path) -> dict[str, Any]:
    """bench/app_pages.py on `run`: the landing page's first load, per page the first visit and
    the later visits' median (s), the gallery's page-turn median and Test sample's for a new
    image."""
    script = Path(__file__).resolve().parent / "app_pages.py"
    got = subprocess.run(
        [sys.executable, str(script), "--run-dir", str(run), "--rounds", "2", "--gallery-pages",
         "10", "--json"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if got.returncode != 0:
        raise RuntimeError(f"bench/app_pages.py failed:\n{got.stdout[-2000:]}{got.stderr[-2000:]}")
    res = json.loads(got.stdout.strip().splitlines()[-1])
    turns = [r["seconds"] for r in res["gallery"][1:]]
    return {
        "landing_s": res["landing"],
        "pages": {k: {"first_s": v[0], "later_s": statistics.median(v[1:] or v)}
                  for k, v in res["pages"].items()},
        "gallery_turn_s": statistics.median(turns) if turns else None,
        "pick_s": statistics.median(res["picks"]) if res["picks"] else None,
    }  # fmt: skip


def one_set(
    name: str, work: Path, *, epochs: int, skip_exact: bool, pages: bool = False
) -> dict[str, Any]:
    from engine.config import TrainConfig
    from engine.data import DataSpec, prepare_data
    from engine.influence.api import build_projected_store, compute_influence
    from engine.influence.methods import run_method
    from engine.influence.queries import Query
    from engine.loading import load_run
    from engine.train import train
    from engine.warmup import warm_run

    root: Path | None = None
    if name == "rgb32":
        root = colour_folder(work / "rgb32-50k", n=50_000, size=32)
    elif name == "rgb96":
        root = colour_folder(work / "rgb96-5k", n=5_000, size=96)
    spec = (
        DataSpec(dataset=f"imagefolder:{root}")
        if root is not None
        else DataSpec(dataset="fashion-mnist", data_dir=FMNIST)
    )
    cfg = TrainConfig(model="lenet5", epochs=epochs, batch_size=BATCH, lr=LR, momentum=MOMENTUM)
    out: dict[str, Any] = {"set": name}
    bundle, out["prepare_s"], out["prepare_mb"] = measured(lambda: prepare_data(spec))
    n = len(bundle.train)
    out["n_train"], out["input_shape"] = n, list(bundle.input_shape)
    out["uint8_mb"] = bundle.train.images.numel() / 2**20
    out["float32_copy_mb"] = 4 * out["uint8_mb"]
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        run = Path(tmp) / "run"
        res, out["train_total_s"], out["train_mb"] = measured(lambda: train(run, spec, cfg))
        out["train_loop_s"] = res.seconds
        out["train_img_per_s"] = n * epochs / res.seconds
        # the first epoch's SGD steps alone (its "seconds" are taken before it evaluates the splits)
        out["steps_img_per_s"] = n / res.metrics[0]["seconds"]
        out["test_acc"] = res.final["test_acc"]
        # what `retracer train` and the app's job do after training: the pages' predictions and
        # PCA map
        _, out["warm_s"], out["warm_mb"] = measured(lambda: warm_run(run))
        out["run_mb"] = sum(f.stat().st_size for f in run.rglob("*") if f.is_file()) / 2**20
        loaded = load_run(run)
        # stored when the app is to be timed on the run; the in-memory pass otherwise
        score: Any = (
            (lambda m: compute_influence(run, m))
            if pages
            else (lambda m: run_method(m, loaded, Query("val")))
        )
        _, out["hydra_s"], out["hydra_mb"] = measured(lambda: score("hydra"))
        if not skip_exact:
            _, out["exact_s"], out["exact_mb"] = measured(lambda: score("sgd-influence"))
        _, out["store_s"], out["store_mb"] = measured(lambda: build_projected_store(run, "hydra"))
        if pages:
            compute_influence(run, "hydra", query="class")
            out["app"] = app_pages(run)
    if root is not None:
        seen, out["plain_s"], out["plain_mb"] = measured(
            lambda: plain_loop(root, epochs, bundle.input_shape, bundle.n_classes)
        )
        out["plain_img_per_s"] = seen / out["plain_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="rgb32,rgb96,fmnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--skip-exact", action="store_true")
    ap.add_argument("--work", default="runs/scale")
    ap.add_argument(
        "--app-pages", action="store_true", help="store the scores and time the app on each run"
    )
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.sets.split(","):
        r = one_set(name.strip(), work, epochs=a.epochs, skip_exact=a.skip_exact, pages=a.app_pages)
        rows.append(r)
        print(
            f"{r['set']}: {r['n_train']} train {r['input_shape']}; prepare {r['prepare_s']:.1f} s "
            f"(+{r['prepare_mb']:.0f} MB; uint8 {r['uint8_mb']:.0f} MB, a float32 copy would be "
            f"{r['float32_copy_mb']:.0f} MB); train {r['train_loop_s']:.1f} s loop / "
            f"{r['train_total_s']:.1f} s with preparation, {r['train_img_per_s']:.0f} img/s "
            f"({r['steps_img_per_s']:.0f} img/s in the steps, evaluation of the 3 splits aside), "
            f"+{r['train_mb']:.0f} MB, test acc {r['test_acc']:.3f}, run folder {r['run_mb']:.0f} MB; "
            f"warm-up {r['warm_s']:.1f} s (+{r['warm_mb']:.0f} MB); "
            f"hydra {r['hydra_s']:.1f} s (+{r['hydra_mb']:.0f} MB)"
            + (f"; exact {r['exact_s']:.1f} s (+{r['exact_mb']:.0f} MB)" if "exact_s" in r else "")
            + f"; hydra index {r['store_s']:.1f} s (+{r['store_mb']:.0f} MB)",
            flush=True,
        )
        if "plain_s" in r:
            print(
                f"  plain torchvision ImageFolder + DataLoader: {r['plain_s']:.1f} s, "
                f"{r['plain_img_per_s']:.0f} img/s, +{r['plain_mb']:.0f} MB; Retracer's loop is "
                f"{r['train_img_per_s'] / r['plain_img_per_s']:.2f}x its throughput (steps alone "
                f"{r['steps_img_per_s'] / r['plain_img_per_s']:.2f}x), with "
                f"preparation {r['n_train'] * a.epochs / r['train_total_s'] / r['plain_img_per_s']:.2f}x",
                flush=True,
            )
        if "app" in r:
            print(
                f"  app: landing {r['app']['landing_s']:.2f} s; (first visit / later visits) "
                + ", ".join(
                    f"{k} {v['first_s']:.2f}/{v['later_s']:.2f} s"
                    for k, v in r["app"]["pages"].items()
                )
                + f"; gallery page turn {r['app']['gallery_turn_s']:.2f} s"
                + f"; Test sample, a new image {r['app']['pick_s']:.2f} s",
                flush=True,
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
