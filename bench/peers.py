"""Retracer's methods next to the field's peers on the same run, the same queries, in one process.

    .venv/bin/python bench/peers.py [--run-dir R] [--subsets 100] [--fresh-subsets 50]
        [--peers trak,ekfac,tracincp] [--methods sgd-influence,...]

Peers (the `peers` extra: `pip install -e ".[peers]"`; a missing one is skipped with a line):

- ``trak``: TRAK (`traker`, imported as `trak`) over the run's epoch checkpoints, CPU projector
  (Rademacher, d = --proj-dim), float32;
- ``ekfac``: EK-FAC influence (`kronfluence`) at the final weights;
- ``tracincp``: captum's TracInCP over the epoch checkpoints (each weighted by its learning rate);
- ``dattri-if``: dattri's conjugate-gradient influence function at the final weights (50 CG
  iterations, regularisation 1e-3);
- ``dattri-tracin``: dattri's TracIn over the epoch checkpoints, weighted by their learning rates.

Every peer scores each validation image; its score for the mean validation loss is the mean over
the images, oriented as Retracer's (positive = the sample helps: removing it raises the loss; all
three document positive = helpful / proponent). For each method and peer the script prints:

- single-model LDS at 1% / 10% / 50% removed (the counterfactual `all` ground truth of
  `retracer lds`, cached in the run), with bootstrap 95% intervals;
- fresh-seed LDS at alpha = 0.5 (50% removed, 3 fresh seeds per subset; TRAK's protocol);
- noise-detection AUROC when the run has known label errors (suspicion = -score);
- seconds and peak memory above the start (RSS) of computing the scores.

Without --run-dir it trains the demo run (the bundled sample, the app's demo MLP) in a temporary
folder. Last line: JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import PeakRSS

from engine.experiments.lds import bootstrap_ci, ground_truth, lds_score, subset
from engine.influence.methods import parse_method_spec
from engine.loading import LoadedRun, load_run
from engine.models import per_sample_loss

PEERS = ("trak", "ekfac", "tracincp", "dattri-if", "dattri-tracin")
INSTALL = "pip install -e '.[peers]'"


def final_model(loaded: LoadedRun, step: int | None = None) -> torch.nn.Module:
    """A copy of the run's model holding the weights of checkpoint `step` (the last by default)."""
    model = copy.deepcopy(loaded.problem.model)
    theta = loaded.traj.load_checkpoint(loaded.traj.n_steps if step is None else step)[0]
    model.load_state_dict({**model.state_dict(), **theta})
    return model.eval()


def epoch_checkpoints(loaded: LoadedRun) -> list[int]:
    """The steps that end each epoch (the checkpoints TRAK and TracInCP average over)."""
    spe = loaded.traj.steps_per_epoch
    return [s for s in sorted(loaded.traj.checkpoints) if s > 0 and s % spe == 0]


def _data(loaded: LoadedRun) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    p, b = loaded.problem, loaded.bundle
    return p.x.all(), p.y, b.val.x(p.x.dtype), b.val.labels


def trak_scores(loaded: LoadedRun, *, proj_dim: int = 512, work: Path) -> np.ndarray:
    """(N, V) TRAK scores of each training sample for each validation image (positive = helpful)."""
    from trak import TRAKer
    from trak.projectors import BasicProjector, ProjectionType

    x, y, vx, vy = _data(loaded)
    model = final_model(loaded)
    n_params = sum(p.numel() for p in model.parameters())
    proj = BasicProjector(grad_dim=n_params, proj_dim=proj_dim, seed=0, proj_type=ProjectionType.rademacher, device=torch.device("cpu"))  # fmt: skip
    tr = TRAKer(model=model, task="image_classification", train_set_size=len(x), save_dir=str(work / "trak"),
                device="cpu", projector=proj, proj_dim=proj_dim, use_half_precision=False, logging_level=40)  # fmt: skip
    steps = epoch_checkpoints(loaded)
    for mid, step in enumerate(steps):
        tr.load_checkpoint(final_model(loaded, step).state_dict(), model_id=mid)
        for i in range(0, len(x), 256):
            tr.featurize(batch=(x[i : i + 256], y[i : i + 256]), num_samples=len(x[i : i + 256]))
    tr.finalize_features()
    for mid, step in enumerate(steps):
        tr.start_scoring_checkpoint(exp_name="val", checkpoint=final_model(loaded, step).state_dict(), model_id=mid, num_targets=len(vx))  # fmt: skip
        tr.score(batch=(vx, vy), num_samples=len(vx))
    return np.asarray(tr.finalize_scores(exp_name="val"), dtype=np.float64)


def ekfac_scores(loaded: LoadedRun, *, work: Path) -> np.ndarray:
    """(N, V) EK-FAC influence (kronfluence) at the final weights (positive = helpful)."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.task import Task
    from torch.utils.data import TensorDataset

    class Classification(Task):
        def compute_train_loss(
            self, batch: Any, model: torch.nn.Module, sample: bool = False
        ) -> torch.Tensor:
            bx, by = batch
            logits = model(bx)
            if sample:  # the true Fisher: labels drawn from the model
                with torch.no_grad():
                    by = torch.multinomial(torch.softmax(logits, -1), 1).flatten()
            return per_sample_loss(logits, by).sum()

        def compute_measurement(self, batch: Any, model: torch.nn.Module) -> torch.Tensor:
            bx, by = batch
            return per_sample_loss(model(bx), by).sum()

    x, y, vx, vy = _data(loaded)
    task = Classification()
    model = prepare_model(final_model(loaded), task)
    an = Analyzer(
        "peers", model, task, cpu=True, output_dir=str(work / "kronfluence"), disable_tqdm=True
    )
    train = TensorDataset(x, y)
    an.fit_all_factors("ekfac", dataset=train, per_device_batch_size=256, overwrite_output_dir=True)
    an.compute_pairwise_scores("val", "ekfac", query_dataset=TensorDataset(vx, vy), train_dataset=train,
                               per_device_query_batch_size=64, per_device_train_batch_size=256,
                               overwrite_output_dir=True)  # fmt: skip
    scores = an.load_pairwise_scores("val")
    assert scores is not None
    return scores["all_modules"].double().numpy().T


def tracincp_scores(loaded: LoadedRun, *, work: Path) -> np.ndarray:
    """(N, V) captum TracInCP over the epoch checkpoints (positive = proponent = helpful)."""
    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    x, y, vx, vy = _data(loaded)
    paths, lrs = [], {}
    for step in epoch_checkpoints(loaded):
        f = work / f"ckpt-{step}.pt"
        torch.save(final_model(loaded, step).state_dict(), f)
        paths.append(str(f))
        lrs[str(f)] = loaded.traj.lr(step - 1)

    def load(model: torch.nn.Module, path: str) -> float:
        model.load_state_dict(torch.load(path, weights_only=True))
        return float(lrs[path])

    model = final_model(loaded)
    tracin = TracInCP(model, TensorDataset(x, y), paths, checkpoints_load_func=load,
                      loss_fn=torch.nn.CrossEntropyLoss(reduction="sum"), batch_size=256,
                      sample_wise_grads_per_batch=True)  # fmt: skip
    return tracin.influence((vx, vy)).double().numpy().T


def _dattri_task(loaded: LoadedRun, checkpoints: list[dict[str, torch.Tensor]]) -> Any:
    from dattri.task import AttributionTask
    from torch.func import functional_call

    model = final_model(loaded)

    def loss(
        params: dict[str, torch.Tensor], data: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        x, y = data  # one sample; dattri adds leading dimensions of 1 that differ by call
        x = x.reshape(-1, *loaded.bundle.input_shape)
        return per_sample_loss(functional_call(model, params, (x,)), y.reshape(-1)).sum()

    return AttributionTask(loss_func=loss, model=model, checkpoints=checkpoints)


def _loaders(loaded: LoadedRun) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader, TensorDataset

    x, y, vx, vy = _data(loaded)
    return (DataLoader(TensorDataset(x, y), batch_size=256, shuffle=False),
            DataLoader(TensorDataset(vx, vy), batch_size=256, shuffle=False))  # fmt: skip


def dattri_if_scores(loaded: LoadedRun, *, work: Path) -> np.ndarray:
    """(N, V) dattri's conjugate-gradient influence function at the final weights (positive =
    helpful: dattri scores g_train' H^-1 g_test)."""
    from dattri.algorithm.influence_function import IFAttributorCG

    theta = {k: v.detach() for k, v in final_model(loaded).state_dict().items()}
    att = IFAttributorCG(
        task=_dattri_task(loaded, [theta]), device="cpu", max_iter=50, regularization=1e-3
    )
    train, val = _loaders(loaded)
    att.cache(train)
    return att.attribute(train, val).detach().double().numpy()


def dattri_tracin_scores(loaded: LoadedRun, *, work: Path) -> np.ndarray:
    """(N, V) dattri's TracIn over the epoch checkpoints, each weighted by its learning rate."""
    from dattri.algorithm.tracin import TracInAttributor

    steps = epoch_checkpoints(loaded)
    ckpts = [{k: v.detach() for k, v in final_model(loaded, s).state_dict().items()} for s in steps]
    lrs = torch.tensor([loaded.traj.lr(s - 1) for s in steps])
    att = TracInAttributor(
        task=_dattri_task(loaded, ckpts), weight_list=lrs, normalized_grad=False, device="cpu"
    )
    train, val = _loaders(loaded)
    return att.attribute(train, val).detach().double().numpy()


PEER_FNS: dict[str, Callable[..., np.ndarray]] = {
    "dattri-if": dattri_if_scores,
    "dattri-tracin": dattri_tracin_scores,
    "trak": trak_scores,
    "ekfac": ekfac_scores,
    "tracincp": tracincp_scores,
}
MODULE = {
    "trak": "trak",
    "ekfac": "kronfluence",
    "tracincp": "captum",
    "dattri-if": "dattri",
    "dattri-tracin": "dattri",
}


def peer_val_scores(
    name: str, loaded: LoadedRun, work: Path, **kw: Any
) -> tuple[np.ndarray | None, str]:
    """(scores (N,) for the mean validation loss, or None; the line that says why not)."""
    try:
        __import__(MODULE[name])
    except ImportError:
        return None, f"skipped {name}: {MODULE[name]} is not installed ({INSTALL})"
    per_image = PEER_FNS[name](loaded, work=work, **kw)
    return per_image.mean(axis=1), ""


def row_for(loaded: LoadedRun, scores: np.ndarray, truths: dict[str, dict[float, np.ndarray]],
            subsets: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    for setting, by_fraction in truths.items():
        for f, t in by_fraction.items():
            m = subsets[setting]
            pred = np.array([[scores[subset(loaded, f, j)].sum()] for j in range(m)])
            out[f"{setting} {f:g}"] = {
                "lds": lds_score(t, pred),
                "ci": bootstrap_ci(t, pred, draws=1000, seed=0),
            }
    flipped = loaded.bundle.manifest.query("split == 'train'")["flipped"].astype(bool).to_numpy()
    if flipped.any():
        from sklearn.metrics import roc_auc_score

        out["auroc"] = float(roc_auc_score(flipped, -scores))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--subsets", type=int, default=100, help="single-model subsets per fraction")
    ap.add_argument("--fresh-subsets", type=int, default=50, help="fresh-seed subsets (alpha 0.5)")
    ap.add_argument("--fresh-seeds", type=int, default=3)
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument(
        "--methods",
        default="sgd-influence,sgd-influence-last,hydra,loss,combined",
        help="ours, comma-separated, each optionally name:key=value (timed from scratch)",
    )
    ap.add_argument("--proj-dim", type=int, default=512)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="peers-"))
    run = Path(a.run_dir) if a.run_dir else tmp / "demo"
    if not a.run_dir:
        from engine.config import TrainConfig
        from engine.data import DataSpec
        from engine.sample_data import SAMPLE_DIGITS, demo_spec
        from engine.train import train

        d, c = demo_spec(str(SAMPLE_DIGITS))
        train(run, DataSpec.from_dict(d), TrainConfig.from_dict(c))
    loaded = load_run(run)
    t0 = time.perf_counter()
    truths = {
        "single": ground_truth(loaded, [0.01, 0.1, 0.5], a.subsets)[0],
        "fresh": ground_truth(loaded, [0.5], a.fresh_subsets, setting="fresh", seeds=a.fresh_seeds)[
            0
        ],
    }
    subsets = {"single": a.subsets, "fresh": a.fresh_subsets}
    print(
        f"ground truth ready in {time.perf_counter() - t0:.0f}s (cached in {run}/lds)", flush=True
    )
    rows: dict[str, dict[str, Any]] = {}
    from engine.influence.scorestore import ScoreStore

    store = ScoreStore(run)
    for m in [s.strip() for s in a.methods.split(",") if s.strip()]:
        name, opts = parse_method_spec(m)
        with PeakRSS() as mem:
            t = time.perf_counter()  # computed here, never read back from the store
            s = store.run(name, "val", **opts)[:, 0]
            secs = time.perf_counter() - t
        rows[m] = {**row_for(loaded, s, truths, subsets), "seconds": secs, "peak_mb": mem.peak_mb}
    for name in [s.strip() for s in a.peers.split(",") if s.strip()]:
        work = tmp / name
        work.mkdir(exist_ok=True)
        kw = {"proj_dim": a.proj_dim} if name == "trak" else {}
        with PeakRSS() as mem:
            t = time.perf_counter()
            s, why = peer_val_scores(name, loaded, work, **kw)
            secs = time.perf_counter() - t
        if s is None:
            print(why)
            continue
        rows[name] = {
            **row_for(loaded, s, truths, subsets),
            "seconds": secs,
            "peak_mb": mem.peak_mb,
        }
    cols = [f"single {f:g}" for f in (0.01, 0.1, 0.5)] + ["fresh 0.5"]
    width = max(20, *(len(n) + 2 for n in rows))
    print(
        f"{'method':<{width}}"
        + "".join(f"{c:>22}" for c in cols)
        + f"{'AUROC':>8}{'seconds':>9}{'peak MB':>9}"
    )
    for name, r in rows.items():
        cells = [f"{r[c]['lds']:+.2f} [{r[c]['ci'][0]:+.2f},{r[c]['ci'][1]:+.2f}]" for c in cols]
        auroc = f"{r['auroc']:.3f}" if "auroc" in r else "-"
        print(
            f"{name:<{width}}"
            + "".join(f"{c:>22}" for c in cells)
            + f"{auroc:>8}{r['seconds']:>9.1f}{r['peak_mb']:>9.0f}"
        )
    print(json.dumps({"run_dir": str(run), "rows": rows}))


if __name__ == "__main__":
    main()
