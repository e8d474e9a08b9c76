"""Training configuration, its validation, and learning-rate schedules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from engine.models import MODEL_NAMES, USER_PREFIX
from engine.options import ParamError, option, options

SCHEDULES = ("constant", "step", "exp", "invsqrt", "cosine")
DTYPES = ("float32", "float64")
OPTIMIZERS = ("sgd", "adam", "adamw")


class ConfigError(ParamError):
    """An impossible hyperparameter or option; the message names it (``param``) and says what is
    allowed."""


@options
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

    model: str = option(
        "mlp",
        label="Model",
        choices=MODEL_NAMES,
        help="logreg | mlp | lenet5 | hara-cnn | cifar-cnn | resnet9-gn | resnet18-gn, or your "
        "own: python:FILE.py:FACTORY (FACTORY(input_shape, n_classes) -> nn.Module)",
    )
    widths: list[int] = option(
        factory=lambda: [64, 64],
        label="MLP widths",
        kind="ints",
        help="hidden widths of the mlp, comma-separated",
    )
    base_width: int = option(
        64,
        label="ResNet width",
        minimum=1,
        maximum=1024,
        help="channels of the ResNets' first stage (resnet9-gn, resnet18-gn); later stages double",
    )
    binary: bool = option(
        False, label="One sigmoid output", help="one sigmoid output (two classes only)"
    )
    epochs: int = option(10, label="Epochs", minimum=1, maximum=500)
    batch_size: int = option(32, label="Batch size", minimum=1, maximum=4096)
    lr: float = option(0.1, label="Learning rate", minimum=1e-6, maximum=10.0)
    momentum: float = option(
        0.9,
        label="Momentum",
        minimum=0.0,
        maximum=0.999,
        help="SGD momentum (ignored by adam / adamw)",
    )
    weight_decay: float = option(1e-4, label="Weight decay", minimum=0.0, maximum=1.0)
    schedule: str = option(
        "constant",
        label="Learning-rate schedule",
        choices=SCHEDULES,
        help="constant | step | exp | invsqrt | cosine",
    )
    gamma: float = option(0.1, label="Schedule factor", help="x gamma per step / epoch (step, exp)")
    step_epochs: int = option(5, label="Epochs per step", help="the step schedule's period")
    augment_shift: int = option(
        0, label="Random shift (pixels)", minimum=0, help="random shifts up to this many pixels"
    )
    augment_flip: bool = option(False, label="Random flips", help="random horizontal flips")
    dtype: str = option("float32", label="Precision", choices=DTYPES)
    seed: int = option(0, label="Seed", minimum=0, maximum=2**31 - 1)
    checkpoint_every: int | None = option(
        None,
        label="Steps between checkpoints",
        help="steps between checkpoints (default: each epoch)",
    )
    device: str = option("auto", label="Device", help="auto | cpu | cuda[:N]")
    threads: int = option(
        1,
        label="CPU threads",
        minimum=1,
        maximum=256,
        help="intra-op CPU threads of training and of every retrain of this run; results depend "
        "on it, so every retrain uses the run's own count (1: the same bits on any machine, and "
        "the executor runs one retrain per core)",
    )
    optimizer: str = option(
        "sgd",
        label="Optimizer",
        choices=OPTIMIZERS,
        help="sgd (default) | adam (L2 in the gradient) | adamw (decoupled weight decay)",
    )
    beta1: float = option(0.9, label="Adam beta1", help="Adam's first-moment decay")
    beta2: float = option(0.999, label="Adam beta2", help="Adam's second-moment decay")
    eps: float = option(1e-8, label="Adam epsilon", help="Adam's epsilon")
    standardize: bool = option(
        False,
        label="Standardise pixels",
        help="standardise each pixel with the training split's mean and std (StandardScaler)",
    )

    backbone: str = option(
        "",
        label="Frozen backbone",
        help="head mode: a torchvision architecture (resnet18, mobilenet_v3_small, ...) or "
        "python:FILE.py:FACTORY that turns each image into features once; the model (logreg or "
        "mlp) is trained on them. Empty: train the model on the images",
    )
    backbone_weights: str = option(
        "",
        label="Backbone weights file",
        help="the backbone's weights: a torch.save of its state dict or a .safetensors file "
        "(nothing is downloaded)",
    )
    backbone_size: int = option(
        0,
        label="Backbone input size",
        minimum=0,
        maximum=1024,
        help="resize images to this square size before the backbone (0: as they are)",
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def validate(self, *, n_train: int | None = None, n_classes: int | None = None) -> None:
        """Raise ConfigError naming the first impossible value."""
        if self.model not in MODEL_NAMES and not self.model.startswith(USER_PREFIX):
            raise ConfigError(
                f"model must be one of {', '.join(MODEL_NAMES)} or python:FILE.py:FACTORY, "
                f"got {self.model!r}",
                param="model",
            )
        _positive_int("base_width", self.base_width)
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("threads", self.threads)
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr}", param="lr")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}", param="momentum")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
                param="optimizer",
            )
        for name, beta in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not (isinstance(beta, int | float) and math.isfinite(beta) and 0 <= beta < 1):
                raise ConfigError(f"{name} must be in [0, 1), got {beta}", param=name)
        if not (isinstance(self.eps, int | float) and math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"eps must be a positive finite number, got {self.eps}", param="eps")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(
                f"weight_decay must be >= 0, got {self.weight_decay}", param="weight_decay"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
                param="schedule",
            )
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ConfigError(f"gamma must be positive, got {self.gamma}", param="gamma")
        _positive_int("step_epochs", self.step_epochs)
        if self.augment_shift < 0:
            raise ConfigError(
                f"augment_shift must be >= 0, got {self.augment_shift}", param="augment_shift"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"dtype must be float32 or float64, got {self.dtype!r}", param="dtype"
            )
        if self.checkpoint_every is not None:
            _positive_int("checkpoint_every", self.checkpoint_every)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(
                f"device must be auto, cpu or cuda, got {self.device!r}", param="device"
            )
        if n_train is not None and self.batch_size > n_train:
            raise ConfigError(
                f"batch_size {self.batch_size} is larger than the {n_train} training samples",
                param="batch_size",
            )
        if self.backbone:
            self._validate_head()
        if self.binary and n_classes is not None and n_classes != 2:
            raise ConfigError(
                f"a binary (sigmoid) model needs exactly 2 classes, the data has {n_classes}"
            )

    def _validate_head(self) -> None:
        """Head mode (engine.backbone): a flat head on the features, no image augmentation."""
        if self.model not in ("logreg", "mlp") and not self.model.startswith(USER_PREFIX):
            raise ConfigError(
                f"with a frozen backbone the model is the head trained on its features: logreg, "
                f"mlp or python:FILE.py:FACTORY, got {self.model!r}",
                param="model",
            )
        if self.augment_shift or self.augment_flip:
            raise ConfigError(
                "a frozen backbone's features are computed once, so random shifts and flips "
                "cannot apply; turn augmentation off",
                param="augment_shift" if self.augment_shift else "augment_flip",
            )
        if not isinstance(self.backbone_size, int) or self.backbone_size < 0:
            raise ConfigError(
                f"backbone_size must be 0 or a positive size, got {self.backbone_size}",
                param="backbone_size",
            )


def _positive_int(name: str, v: Any) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {v}", param=name)


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
