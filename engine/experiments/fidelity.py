"""Fidelity of the estimators against true leave-one-out (Hara et al. 2019, Sec. 7.1).

On the bundled digits, classes 1 vs 7 (361 images): 200 training samples, 160 validation
samples and 1 test sample (the published 200 / 200 does not fit, and a run needs a non-empty
test split), float64, a binary model (one sigmoid output). Inputs are standardised per pixel
with the training split's mean and std, as the authors' code does (sklearn StandardScaler in
their Sec. 7.1 DataModule); `standardize=False` feeds raw [0, 1] pixels instead. For every training sample the true
change of the mean validation loss when it is left out of SGD (engine.experiments.loo) is
compared with each method's score: Kendall's tau over all 200 samples, and the Jaccard index of
the set {10 most positive + 10 most negative} of estimate and truth. Mean and std over seeds;
the seed changes the split, the initial weights and the batches.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from engine.backbone import BackboneSpec
from engine.config import OPTIMIZERS, ConfigError, TrainConfig
from engine.data import DataSpec
from engine.experiments.loo import loo_changes
from engine.influence.methods import get_method, method_names, parse_method_spec, run_method
from engine.influence.queries import Query

MODELS = ("logreg", "dnn")
N_TRAIN, N_VAL, N_TEST = 200, 160, 1
# Stratified split fractions that give exactly 200 / 160 / 1 of the 182 + 179 images.
_VAL_FRACTION, _TEST_FRACTION = 0.4432, 0.00276

Log = Callable[[str], None]


# The Adam(W) variant of the protocol keeps everything but the optimiser and its step size: Adam
# moves each weight by about lr per step whatever the gradient scale, so SGD's 0.1 is far too big.
ADAM_LR = 0.01


def protocol(
    model: str,
    seed: int,
    *,
    optimizer: str = "sgd",
    standardize: bool = True,
    backbone: BackboneSpec | None = None,
) -> TrainConfig:
    """Hara et al.'s Sec. 7.1 training protocol for `model` (logreg | dnn), float64, binary.

    optimizer: sgd (the paper's) | adam | adamw: the same protocol (schedule, batches, epochs,
    weight decay) with Adam(W) (betas .9 / .999, eps 1e-8) at lr ADAM_LR instead of SGD's.
    standardize: per-pixel StandardScaler inputs (the authors' code) or raw [0, 1] pixels.
    backbone: head mode (engine.backbone): the same protocol on a frozen backbone's features
    (standardised per feature when `standardize`).
    """
    if optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}",
            param="optimizer",
        )
    cfg = _sgd_protocol(model, seed)
    cfg.standardize = standardize
    if backbone is not None:
        cfg = replace(cfg, **backbone.settings())
    if optimizer != "sgd":
        cfg.optimizer, cfg.lr = optimizer, ADAM_LR
    return cfg


def _sgd_protocol(model: str, seed: int) -> TrainConfig:
    # Sec. 7.1: one sigmoid output, plain SGD, float64 on the CPU
    common = dict(binary=True, momentum=0.0, dtype="float64", seed=seed, device="cpu")
    if model == "logreg":
        return TrainConfig(model="logreg", epochs=5, batch_size=5, lr=0.1, schedule="invsqrt",
                           weight_decay=1e-2, **common)  # type: ignore[arg-type]  # fmt: skip
    if model == "dnn":
        return TrainConfig(model="mlp", widths=[8, 8], epochs=10, batch_size=20, lr=0.1,
                           schedule="constant", weight_decay=1e-3, **common)  # type: ignore[arg-type]  # fmt: skip
    raise ConfigError(f"model must be logreg or dnn, got {model!r}", param="model")


def data_spec(seed: int) -> DataSpec:
    """Digits 1 vs 7 split 200 / 160 / 1, seeded."""
    return DataSpec(
        dataset="digits",
        classes=[1, 7],
        val_fraction=_VAL_FRACTION,
        test_fraction=_TEST_FRACTION,
        seed=seed,
    )


def default_methods() -> list[str]:
    """Every registered method that uses the query (influence-function among them)."""
    return [m for m in method_names() if get_method(m).uses_query]


def kendall(scores: np.ndarray, truth: np.ndarray) -> float:
    """Kendall's tau-b between two score vectors (N,)."""
    tau = kendalltau(scores, truth).statistic
    return float(tau) if tau is not None and math.isfinite(tau) else float("nan")


def extremes(values: np.ndarray, k: int = 10) -> set[int]:
    """Indices of the k most positive and the k most negative entries of `values` (N,)."""
    order = np.argsort(values, kind="stable")
    return set(order[:k].tolist()) | set(order[-k:].tolist())


def jaccard(scores: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Jaccard index of the {k most positive + k most negative} sets of estimate and truth."""
    a, b = extremes(scores, k), extremes(truth, k)
    return len(a & b) / len(a | b)


@dataclass
class SeedResult:
    seed: int
    loo_seconds: float
    kendall: dict[str, float] = field(default_factory=dict)
    jaccard: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class FidelityResult:
    model: str
    methods: list[str]
    seeds: list[SeedResult]

    def summary(self) -> dict[str, dict[str, Any]]:
        """{method: {"kendall", "kendall_std", "jaccard", "jaccard_std", "seconds"}} (+ "error")."""
        out: dict[str, dict[str, Any]] = {}
        for m in self.methods:
            taus = [s.kendall[m] for s in self.seeds if m in s.kendall]
            jacs = [s.jaccard[m] for s in self.seeds if m in s.jaccard]
            secs = [s.seconds[m] for s in self.seeds if m in s.seconds]
            row: dict[str, Any] = {}
            if taus:
                finite = [t for t in taus if math.isfinite(t)]
                # tau is undefined when a method's scores are constant on a seed (e.g. truncated CG
                # stopped at once on negative curvature): averaged over the other seeds, counted here.
                row = {
                    "kendall": float(np.mean(finite)) if finite else float("nan"),
                    "kendall_std": float(np.std(finite)) if finite else float("nan"),
                    "kendall_undefined_seeds": len(taus) - len(finite),
                    "jaccard": float(np.mean(jacs)),
                    "jaccard_std": float(np.std(jacs)),
                    "seconds": float(np.mean(secs)),
                    "n_seeds": len(taus),
                }
            errs = [s.errors[m] for s in self.seeds if m in s.errors]
            if errs:
                row["error"] = errs[0]
            out[m] = row
        return out


def fidelity_seed(
    model: str,
    seed: int,
    run_dir: Path,
    *,
    methods: Sequence[str],
    method_options: dict[str, dict[str, Any]] | None = None,
    log: Log | None = None,
    optimizer: str = "sgd",
    standardize: bool = True,
    backbone: BackboneSpec | None = None,
) -> tuple[SeedResult, np.ndarray, dict[str, np.ndarray]]:
    """Train one run, compute true LOO and every method's scores; (result, truth (N,), scores)."""
    from engine.loading import load_run
    from engine.train import train

    cfg = protocol(model, seed, optimizer=optimizer, standardize=standardize, backbone=backbone)
    train(run_dir, data_spec(seed), cfg, overwrite=True)
    loaded = load_run(run_dir)
    t0 = time.perf_counter()
    truth = loo_changes(loaded, Query("val"))[:, 0]
    res = SeedResult(seed=seed, loo_seconds=time.perf_counter() - t0)
    scores: dict[str, np.ndarray] = {}
    for m in methods:
        t1 = time.perf_counter()
        name, opts = parse_method_spec(m)
        opts = {**(method_options or {}).get(m, {}), **opts}
        try:
            s = run_method(name, loaded, Query("val"), **opts)[:, 0]
        except Exception as e:  # one broken method must not hide the others' rows
            res.errors[m] = f"{type(e).__name__}: {e}"
            if log is not None:
                log(f"  {m}: failed: {res.errors[m]}")
            continue
        res.seconds[m] = time.perf_counter() - t1
        scores[m] = s
        res.kendall[m] = kendall(s, truth)
        res.jaccard[m] = jaccard(s, truth)
    if log is not None:
        cells = ", ".join(f"{m} tau {res.kendall[m]:.3f} J {res.jaccard[m]:.2f}" for m in scores)
        log(f"{model} seed {seed}: loo {res.loo_seconds:.1f}s; {cells}")
    return res, truth, scores


def run_fidelity(
    model: str,
    *,
    seeds: int | Sequence[int] = 10,
    methods: Sequence[str] | None = None,
    work_dir: str | Path | None = None,
    method_options: dict[str, dict[str, Any]] | None = None,
    log: Log | None = None,
    optimizer: str = "sgd",
    standardize: bool = True,
    backbone: BackboneSpec | None = None,
) -> FidelityResult:
    """The Sec. 7.1 experiment for `model` over `seeds` (a count: seeds 0..S-1, or a list).

    methods: registered names or 'name:key=value' variants (default: every query method).
    optimizer: sgd (the paper's protocol) | adam | adamw (see `protocol`).
    standardize: StandardScaler inputs (the authors' protocol) or raw [0, 1] pixels.
    backbone: the protocol in head mode, on this frozen backbone's features.
    """
    protocol(model, 0, optimizer=optimizer)  # validates the model name and the optimiser
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("seeds must be at least 1", param="seeds")
    names = list(methods) if methods else default_methods()
    known = set(method_names())
    unknown = [m for m in names if parse_method_spec(m)[0] not in known]
    if unknown:
        raise ConfigError(
            f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    results = []
    with tempfile.TemporaryDirectory(prefix="retracer-fidelity-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        for seed in seed_list:
            res, _, _ = fidelity_seed(
                model,
                seed,
                root / f"{model}-seed{seed}",
                methods=names,
                method_options=method_options,
                log=log,
                optimizer=optimizer,
                standardize=standardize,
                backbone=backbone,
            )
            results.append(res)
    return FidelityResult(model, names, results)
