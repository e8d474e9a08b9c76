"""Training configuration, its validation, and learning-rate schedules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.models import MODEL_NAMES

SCHEDULES = ("constant", "step", "exp", "invsqrt", "cosine")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam", "adamw")


class ConfigError(ValueError):
    """An impossible hyperparameter; the message names it and says what is allowed."""


@dataclass
class TrainConfig:
    """Optimiser hyperparameters and everything else that decides the trajectory.

    optimizer: sgd (momentum, L2 weight decay in the gradient) | adam (beta1, beta2, eps, L2
    weight decay added to the gradient, as torch.optim.Adam) | adamw (decoupled weight decay,
    as torch.optim.AdamW). `momentum` is ignored by adam / adamw. See engine.sgd.

    schedule: constant | step (x gamma every `step_epochs`) | exp (x gamma per epoch) |
    invsqrt (lr / sqrt(t + 1), t the global step) | cosine (to 0 over the run).
    binary: one output logit with a sigmoid (two classes only), as in Hara et al. Sec. 7.1.
    checkpoint_every: steps between checkpoints; None = at the start of every epoch.
    standardize: feed the model (x - mean) / std per pixel, with the mean and std of the whole
    training split (sklearn's StandardScaler, as Hara et al.'s Sec. 7.1 code); fixed for the run,
    also for counterfactual and retraining runs that drop samples.
    """

    model: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [64, 64])
    binary: bool = False
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "constant"
    gamma: float = 0.1
    step_epochs: int = 5
    augment_shift: int = 0
    augment_flip: bool = False
    dtype: str = "float32"
    seed: int = 0
    checkpoint_every: int | None = None
    device: str = "auto"
    optimizer: str = "sgd"
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    standardize: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def validate(self, *, n_train: int | None = None, n_classes: int | None = None) -> None:
        """Raise ConfigError naming the first impossible value."""
        if self.model not in MODEL_NAMES:
            raise ConfigError(
                f"--model must be one of {', '.join(MODEL_NAMES)}, got {self.model!r}"
            )
        _positive_int("epochs", self.epochs)
        _positive_int("batch-size", self.batch_size)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a positive finite number, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        for name, beta in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not (isinstance(beta, int | float) and math.isfinite(beta) and 0 <= beta < 1):
                raise ConfigError(f"--{name} must be in [0, 1), got {beta}")
        if not (isinstance(self.eps, int | float) and math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"--eps must be a positive finite number, got {self.eps}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"
            )
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ConfigError(f"--gamma must be positive, got {self.gamma}")
        _positive_int("step-epochs", self.step_epochs)
        if self.augment_shift < 0:
            raise ConfigError(f"--augment-shift must be >= 0, got {self.augment_shift}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be float32 or float64, got {self.dtype!r}")
        if self.checkpoint_every is not None:
            _positive_int("checkpoint-every", self.checkpoint_every)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if n_train is not None and self.batch_size > n_train:
            raise ConfigError(
                f"--batch-size {self.batch_size} is larger than the {n_train} training samples"
            )
        if self.binary and n_classes is not None and n_classes != 2:
            raise ConfigError(
                f"a binary (sigmoid) model needs exactly 2 classes, the data has {n_classes}"
            )


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError(f"--{name} must be a positive integer, got {v}")


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """eta_t for global step `step` (0-based)."""
    epoch = step // steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_epochs)
    if cfg.schedule == "exp":
        return cfg.lr * cfg.gamma**epoch
    if cfg.schedule == "invsqrt":
        return cfg.lr / math.sqrt(step + 1)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
    raise ConfigError(f"unknown schedule {cfg.schedule!r}")
