"""Models the estimators support: no BatchNorm, no dropout (per-sample losses must not depend
on the rest of the batch, and replay must be deterministic). GroupNorm is fine.

Every model maps float input (B, C, H, W) to logits (B, K). K = 1 means a binary model with a
sigmoid output (labels 0 / 1, binary cross-entropy); K >= 2 means softmax cross-entropy.

Built in: logreg, mlp, lenet5, hara-cnn, cifar-cnn, and two ResNets with GroupNorm: resnet9-gn
(the DAWNBench ResNet-9 layout) and resnet18-gn (CIFAR-style, basic blocks [2, 2, 2, 2]), both
`base_width` wide in their first stage. Bring your own with ``python:FILE.py:FACTORY``:
FACTORY(input_shape, n_classes) -> nn.Module; check_model refuses what would make a sample's
loss depend on its batch or on chance.
"""

from __future__ import annotations

import runpy
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MODEL_NAMES = ("logreg", "mlp", "lenet5", "hara-cnn", "cifar-cnn", "resnet9-gn", "resnet18-gn")
USER_PREFIX = "python:"  # python:FILE.py:FACTORY


class ModelError(ValueError):
    """An unknown model name or options that do not fit the data."""


class Standardize(nn.Module):
    """Fixed per-pixel standardisation (x - mean) / std, as sklearn's StandardScaler.

    mean, std: (1, C, H, W) buffers, not parameters: no estimator differentiates them, and they
    stay the same for every counterfactual run (they belong to the data preprocessing).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def fit(cls, x: torch.Tensor) -> Standardize:
        """Statistics of training inputs x (N, C, H, W) in [0, 1]; a constant pixel gets std 1."""
        x64 = x.to(torch.float64)
        mean = x64.mean(dim=0, keepdim=True)
        std = x64.std(dim=0, keepdim=True, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return cls(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    n_outputs: int,
    widths: Sequence[int] = (64, 64),
    base_width: int = 64,
    standardize: Standardize | None = None,
) -> nn.Module:
    """Build model `name` for inputs of `input_shape` = (C, H, W) and `n_outputs` logits.

    widths: the mlp's hidden widths; base_width: the ResNets' first-stage channels.
    standardize: when given, the model's first layer (Sequential index 0, no parameters, so the
    parameter names shift by one); the initial weights do not depend on it.
    Raises ModelError for an unknown name, a user model that cannot be loaded, or a model
    check_model refuses.
    """
    if name.startswith(USER_PREFIX):
        model = user_model(name, input_shape=input_shape, n_outputs=n_outputs)
    else:
        model = _build(
            name, input_shape=input_shape, n_outputs=n_outputs, widths=widths,
            base_width=base_width,
        )  # fmt: skip
    check_model(model)
    if standardize is None:
        return model
    if isinstance(model, nn.Sequential):
        return nn.Sequential(standardize, *model)
    return nn.Sequential(standardize, model)


def user_model(name: str, *, input_shape: tuple[int, int, int], n_outputs: int) -> nn.Module:
    """The model of ``python:FILE.py:FACTORY``: FACTORY(input_shape, n_outputs) from FILE.py,
    which is run as a script (runpy) each time the run is opened, so it must stay where it is."""
    spec = name[len(USER_PREFIX) :]
    path, sep, factory = spec.rpartition(":")
    if not sep or not path or not factory:
        raise ModelError(f"a user model is python:FILE.py:FACTORY, got {name!r}")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"user model file {file} does not exist ({name})")
    try:
        namespace = runpy.run_path(str(file))
    except Exception as e:  # the user's code: any error, named with its file
        raise ModelError(f"user model file {file} failed to run: {type(e).__name__}: {e}") from e
    make = namespace.get(factory)
    if not callable(make):
        raise ModelError(f"user model file {file} has no function {factory!r}")
    try:
        model = make(tuple(input_shape), int(n_outputs))
    except Exception as e:  # noqa: BLE001 - the user's factory
        raise ModelError(f"{factory}{(tuple(input_shape), n_outputs)} in {file} failed: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"{factory} in {file} returned {type(model).__name__}, not an nn.Module")
    return model


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)  # fmt: skip
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def check_model(model: nn.Module) -> None:
    """ModelError naming the first module that makes a sample's loss depend on the rest of its
    batch (BatchNorm, instance norm with running statistics) or on chance (dropout), and what
    to use instead: the estimators and bit-exact replay need neither."""
    for name, m in model.named_modules():
        where = f"layer {name!r} ({type(m).__name__})" if name else type(m).__name__
        if isinstance(m, _BATCH_NORMS) or type(m).__name__.startswith("LazyBatchNorm"):
            raise ModelError(
                f"{where} normalises over the batch, so a sample's loss depends on the other "
                "samples of its batch; use nn.GroupNorm(groups, channels) instead (e.g. 8 groups)"
            )
        if isinstance(m, _DROPOUTS):
            raise ModelError(
                f"{where} drops units at random, so replaying training is not deterministic; "
                "remove it (weight decay or --augment-shift regularise without chance)"
            )
        if isinstance(m, _INSTANCE_NORMS) and m.track_running_stats:
            raise ModelError(
                f"{where} keeps running statistics that change with every batch; use "
                "track_running_stats=False or nn.GroupNorm"
            )


def _build(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    n_outputs: int,
    widths: Sequence[int],
    base_width: int = 64,
) -> nn.Module:
    c, h, w = input_shape
    d = c * h * w
    if n_outputs < 1:
        raise ModelError(f"a model needs at least one output, got {n_outputs}")
    if name == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(d, n_outputs))
    if name == "mlp":
        if not widths or any(int(x) <= 0 for x in widths):
            raise ModelError(f"mlp widths must be positive integers, got {list(widths)}")
        layers: list[nn.Module] = [nn.Flatten()]
        prev = d
        for width in widths:
            layers += [nn.Linear(prev, int(width)), nn.ReLU()]
            prev = int(width)
        layers.append(nn.Linear(prev, n_outputs))
        return nn.Sequential(*layers)
    if name == "lenet5":
        return _lenet5(c, h, w, n_outputs)
    if name == "hara-cnn":
        return _hara_cnn(c, h, w, n_outputs)
    if name == "cifar-cnn":
        return _cifar_cnn(c, h, w, n_outputs)
    if name in ("resnet9-gn", "resnet18-gn"):
        if base_width < 1:
            raise ModelError(f"base_width must be a positive integer, got {base_width}")
        if name == "resnet9-gn":
            return _resnet9_gn(c, n_outputs, width=base_width)
        return _resnet_gn(c, n_outputs, blocks=(2, 2, 2, 2), width=base_width)
    raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def _conv_out(size: int, k: int, pad: int = 0) -> int:
    return size + 2 * pad - k + 1


def _conv_relu_pool(c_in: int, c_out: int, pad: int) -> list[nn.Module]:
    """A 5x5 convolution, ReLU and 2x2 max pooling (three Sequential slots, so parameter names
    stay "<index>.weight" as before)."""
    return [nn.Conv2d(c_in, c_out, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2)]


def _lenet5(c: int, h: int, w: int, k: int) -> nn.Module:
    """LeNet-5 with ReLU. Small inputs (< 28 px) get padded convolutions so the shapes fit."""
    pad = 2
    h1, w1 = _conv_out(h, 5, pad) // 2, _conv_out(w, 5, pad) // 2
    pad2 = 0 if min(h1, w1) >= 10 else 2
    h2, w2 = _conv_out(h1, 5, pad2) // 2, _conv_out(w1, 5, pad2) // 2
    if h2 < 1 or w2 < 1:
        raise ModelError(f"lenet5 needs larger images than {h}x{w}")
    return nn.Sequential(
        *_conv_relu_pool(c, 6, pad),
        *_conv_relu_pool(6, 16, pad2),
        nn.Flatten(),
        nn.Linear(16 * h2 * w2, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, k),
    )


def _hara_cnn(c: int, h: int, w: int, k: int) -> nn.Module:
    """Hara et al.'s MNIST CNN: conv5x5(20)-pool-conv5x5(20)-pool-fc."""
    pad = 0 if min(h, w) >= 28 else 2
    h1, w1 = _conv_out(h, 5, pad) // 2, _conv_out(w, 5, pad) // 2
    h2, w2 = _conv_out(h1, 5, pad) // 2, _conv_out(w1, 5, pad) // 2
    if h2 < 1 or w2 < 1:
        raise ModelError(f"hara-cnn needs larger images than {h}x{w}")
    return nn.Sequential(
        *_conv_relu_pool(c, 20, pad),
        *_conv_relu_pool(20, 20, pad),
        nn.Flatten(),
        nn.Linear(20 * h2 * w2, k),
    )


def _cifar_cnn(c: int, h: int, w: int, k: int) -> nn.Module:
    """A small CNN with GroupNorm for 32x32 RGB images (any size works)."""
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1),
        nn.GroupNorm(8, 32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.GroupNorm(8, 64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.GroupNorm(8, 64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, k),
    )


class BasicBlock(nn.Module):
    """A ResNet basic block with GroupNorm: conv3x3-GN-ReLU-conv3x3-GN, plus the input (a 1x1
    conv + GN on it when the shape changes), then ReLU. GroupNorm normalises each sample on its
    own, so a sample's loss does not depend on its batch (BatchNorm's would)."""

    def __init__(self, c_in: int, c_out: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.gn1 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.gn2 = nn.GroupNorm(_groups(c_out), c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.GroupNorm(_groups(c_out), c_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _groups(c: int) -> int:
    """GroupNorm groups for c channels: 32 (GroupNorm's usual) where that leaves at least 2
    channels a group, else 8, 4 or 2 on the same rule, else 1."""
    for g in (32, 8, 4, 2):
        if c % g == 0 and c // g >= 2:
            return g
    return 1


def _resnet_gn(c: int, k: int, *, blocks: Sequence[int], width: int) -> nn.Module:
    """A CIFAR-style ResNet with GroupNorm: a 3x3 stem, len(blocks) stages of basic blocks
    (widths width * 2^i, stride 2 from the second stage), global average pooling and a Linear
    head, as one Sequential (penultimate features = all but the head)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c, width, 3, padding=1, bias=False),
        nn.GroupNorm(_groups(width), width),
        nn.ReLU(),
    ]
    c_in = width
    for i, n in enumerate(blocks):
        c_out = width * 2**i
        for j in range(n):
            layers.append(BasicBlock(c_in, c_out, stride=2 if i > 0 and j == 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, k)]
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + body(x)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _conv_gn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(_groups(c_out), c_out),
            nn.ReLU()]  # fmt: skip


def _resnet9_gn(c: int, k: int, *, width: int) -> nn.Module:
    """The DAWNBench ResNet-9 (Page, 2018) with GroupNorm for BatchNorm: prep (w), layer 1
    (2w, pool, residual), layer 2 (4w, pool), layer 3 (8w, pool, residual), global max pooling,
    a Linear head."""
    w = width
    return nn.Sequential(
        *_conv_gn_relu(c, w),
        *_conv_gn_relu(w, 2 * w), nn.MaxPool2d(2),
        Residual(nn.Sequential(*_conv_gn_relu(2 * w, 2 * w), *_conv_gn_relu(2 * w, 2 * w))),
        *_conv_gn_relu(2 * w, 4 * w), nn.MaxPool2d(2),
        *_conv_gn_relu(4 * w, 8 * w), nn.MaxPool2d(2),
        Residual(nn.Sequential(*_conv_gn_relu(8 * w, 8 * w), *_conv_gn_relu(8 * w, 8 * w))),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8 * w, k),
    )  # fmt: skip


def penultimate(model: nn.Module) -> nn.Module:
    """The model without its final linear layer: maps input to the features (B, F) it classifies."""
    if not isinstance(model, nn.Sequential) or not isinstance(model[-1], nn.Linear):
        raise ModelError("penultimate features need a Sequential model ending in a Linear layer")
    return model[:-1]


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample loss (B,) from logits (B, K) and integer labels (B,).

    K = 1: binary cross-entropy with logits (label 0 / 1); K >= 2: softmax cross-entropy.
    """
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(
            logits[:, 0], labels.to(logits.dtype), reduction="none"
        )
    return F.cross_entropy(logits, labels, reduction="none")


def predict(logits: torch.Tensor) -> torch.Tensor:
    """Predicted class (B,) from logits (B, K)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (B, max(K, 2))."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)
