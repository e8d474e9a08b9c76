"""Models the estimators support: no BatchNorm, no dropout (per-sample losses must not depend
on the rest of the batch, and replay must be deterministic). GroupNorm is fine.

Every model maps float input (B, C, H, W) to logits (B, K). K = 1 means a binary model with a
sigmoid output (labels 0 / 1, binary cross-entropy); K >= 2 means softmax cross-entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MODEL_NAMES = ("logreg", "mlp", "lenet5", "hara-cnn", "cifar-cnn")


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
    standardize: Standardize | None = None,
) -> nn.Module:
    """Build model `name` for inputs of `input_shape` = (C, H, W) and `n_outputs` logits.

    standardize: when given, the model's first layer (Sequential index 0, no parameters, so the
    parameter names shift by one); the initial weights do not depend on it.
    """
    model = _build(name, input_shape=input_shape, n_outputs=n_outputs, widths=widths)
    if standardize is None:
        return model
    assert isinstance(model, nn.Sequential)
    return nn.Sequential(standardize, *model)


def _build(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    n_outputs: int,
    widths: Sequence[int],
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
