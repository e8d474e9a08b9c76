"""The training problem of a run: model, data tensors, optimiser settings, batches, evaluation.

Shared by training (engine.train), replay (engine.loading) and fresh-seed retraining
(engine.fresh). Images are uint8 (N, C, H, W) in the split; the problem holds them so on the
run's device and converts each batch to float in [0, 1] (engine.inputs.Inputs).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import functional_call

from engine.config import TrainConfig
from engine.data import DataBundle, Split
from engine.inputs import Inputs
from engine.models import Standardize, build_model, penultimate, per_sample_loss, predict
from engine.sgd import Problem
from engine.trajectory import Params

__all__ = [
    "DTYPE",
    "aug_seed_for",
    "build_problem",
    "epoch_batches",
    "eval_batch_size",
    "evaluate",
    "penultimate_features",
    "resolve_device",
    "split_logits",
    "steps_per_epoch",
]

DTYPE = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_problem(bundle: DataBundle, cfg: TrainConfig) -> tuple[Problem, Params]:
    """The training problem and the initial weights theta_0 (seeded by cfg.seed)."""
    dtype, device = DTYPE[cfg.dtype], resolve_device(cfg.device)
    n_out = 1 if cfg.binary else bundle.n_classes
    torch.manual_seed(cfg.seed)
    scaler = Standardize.fit(bundle.train.x(torch.float64)) if cfg.standardize else None
    model = build_model(
        cfg.model,
        input_shape=bundle.input_shape,
        n_outputs=n_out,
        widths=cfg.widths,
        base_width=cfg.base_width,
        standardize=scaler,
    )
    model = model.to(device=device, dtype=dtype)
    problem = Problem(
        model=model,
        x=Inputs.of(bundle.train.model_store(), dtype=dtype, device=device),
        y=bundle.train.labels.to(device),
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        augment_shift=cfg.augment_shift,
        augment_flip=cfg.augment_flip,
        optimizer=cfg.optimizer,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        eps=cfg.eps,
        threads=cfg.threads,
    )
    theta0 = {k: p.detach().clone() for k, p in model.named_parameters()}
    return problem, theta0


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return math.ceil(n_train / batch_size)


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[torch.Tensor]:
    """The seeded shuffle of epoch `epoch`, cut into batches (the last one may be smaller)."""
    perm = torch.as_tensor(np.random.default_rng([seed, epoch]).permutation(n), dtype=torch.int64)
    return list(torch.split(perm, batch_size))


def aug_seed_for(cfg: TrainConfig, step: int) -> int:
    return (
        (cfg.seed * 10_000_019 + step) % (2**62) if (cfg.augment_shift or cfg.augment_flip) else 0
    )


def eval_batch_size(input_shape: tuple[int, ...]) -> int:
    """Images per forward pass when evaluating: 2048 for inputs of up to 1,024 values (digits,
    MNIST-size), fewer for larger ones so the activations stay near 2**21 input values a batch
    (a 2048-image batch of 96x96 RGB made LeNet-5's evaluation peak at 1.5 GB)."""
    size = math.prod(input_shape)
    return 2048 if size <= 1024 else max(64, (1 << 21) // size)


@torch.no_grad()
def evaluate(
    problem: Problem, theta: Params, split: Split, *, batch_size: int | None = None
) -> dict[str, float]:
    """Mean loss and accuracy of `theta` on `split` (no augmentation)."""
    logits = split_logits(problem, theta, split, batch_size=batch_size)
    y = split.labels.to(logits.device)
    return {
        "loss": float(per_sample_loss(logits, y).mean()),
        "acc": float((predict(logits) == y).double().mean()),
    }


@torch.no_grad()
def split_logits(
    problem: Problem, theta: Params, split: Split, *, batch_size: int | None = None
) -> torch.Tensor:
    """Logits (N, K) of `theta` on every image of `split`, `batch_size` images at a time
    (default: eval_batch_size of the input shape)."""
    dtype, device = problem.x.dtype, problem.x.device
    batch_size = batch_size or eval_batch_size(tuple(problem.x.shape[1:]))
    out = []
    for i in range(0, len(split), batch_size):
        xb = split.x_rows(slice(i, i + batch_size), dtype).to(device)
        out.append(functional_call(problem.model, theta, (xb,)))
    return torch.cat(out) if out else torch.zeros(0, 1, dtype=dtype)


@torch.no_grad()
def penultimate_features(
    problem: Problem,
    theta: Params,
    x: torch.Tensor | Inputs | None = None,
    *,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Features (N, F) of the model without its last linear layer at `theta` (for logreg: the
    inputs). x: float inputs (N, C, H, W) in [0, 1] (default: the training split, problem.x)."""
    x = problem.x if x is None else x
    body = penultimate(problem.model)
    names = {name for name, _ in body.named_parameters()}
    keep = {k: t for k, t in theta.items() if k in names}
    out = [
        functional_call(body, keep, (x[i : i + batch_size],)).reshape(
            len(x[i : i + batch_size]), -1
        )
        for i in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0, 1, dtype=x.dtype)
