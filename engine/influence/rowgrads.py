"""Per-sample gradients materialised as a flat (B, P) block from the folded route's one captured
backward (engine.influence.pergrad.fold_backward): for the H := 0 passes that keep them
(self-influence, the projected store), in row blocks so a wide model's block stays bounded.

For a Linear layer sample k's gradient is delta_k a_k^T, for an affine GroupNorm sums over positions
(pergrad.group_norm_grads), for a Conv2d the correlation of a_k with delta_k (conv_weight_grads);
a = the layer's input, delta_k = dl_k / d output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.influence.pergrad import Layers, fold_backward, group_norm_grads
from engine.sgd import Problem, apply_update
from engine.trajectory import Params

# Output positions from which a convolution's per-sample weight gradients come from one grouped
# convolution rather than an unfolded input (see conv_weight_grads)
_GROUPED_FROM_POSITIONS = 1024


def conv_weight_grads(
    m: nn.Conv2d, a: torch.Tensor, delta: torch.Tensor, *, route: str | None = None
) -> torch.Tensor:
    """Per-sample weight gradients (B, O, C, kh, kw) of a plain Conv2d from its input a (B, C, H, W)
    and delta = dl_k / d output (B, O, H', W').

    Sample b's gradient is the correlation of its input with its own output gradient.
    route "grouped": the whole batch is one grouped convolution (groups = B, the input's channels
    as the batch) with stride and dilation swapped, cropped to the kernel's size; no unfolded
    (B, C*kh*kw, H'*W') copy of the input is formed. route "unfold": that copy times delta, one
    matrix product per sample. By default "grouped" when the output has at least 1024 positions:
    on one core it took lenet5's first layer at 96x96 RGB from 210 to 70 ms (and its 177 MB
    copy away), while on resnet9-gn's 4x4 and 8x8 layers it was 2-3x slower than "unfold"."""
    assert not isinstance(m.padding, str)  # supports_fold
    b, c = a.shape[:2]
    o, (kh, kw) = m.out_channels, m.kernel_size
    if route is None:
        route = "grouped" if delta[0, 0].numel() >= _GROUPED_FROM_POSITIONS else "unfold"
    if route not in ("grouped", "unfold"):
        raise ValueError(f"unknown route {route!r}; use 'grouped' or 'unfold'")
    if route == "unfold":
        cols = F.unfold(a, m.kernel_size, m.dilation, m.padding, m.stride)  # (B, C*kh*kw, L)
        d = delta.reshape(b, o, -1)  # (B, O, L)
        return torch.bmm(d, cols.transpose(1, 2)).reshape(b, *m.weight.shape)
    g = F.conv2d(
        a.transpose(0, 1),
        delta.reshape(b * o, 1, *delta.shape[2:]),
        stride=m.dilation,
        padding=m.padding,
        dilation=m.stride,
        groups=b,
    )  # (C, B*O, >= kh, >= kw)
    return g[:, :, :kh, :kw].reshape(c, b, o, kh, kw).permute(1, 2, 0, 3, 4)


def _layer_grads_into(
    m: nn.Module, a: torch.Tensor, delta: torch.Tensor, out: dict[str, torch.Tensor]
) -> None:
    """Write one layer's per-sample gradients into out {"weight": (B, *w.shape), "bias": (B, O)}
    (views of the flat (B, P) block), from its input a and the gradient delta of the per-sample
    loss with respect to its output."""
    b = a.shape[0]
    if isinstance(m, nn.GroupNorm):
        for kind, g in group_norm_grads(m, a, delta).items():
            out[kind].copy_(g)
        return
    if isinstance(m, nn.Linear):
        torch.mul(delta[:, :, None], a[:, None, :], out=out["weight"])
        bias = delta
    else:
        assert isinstance(m, nn.Conv2d)  # supports_fold
        out["weight"].copy_(conv_weight_grads(m, a, delta))
        bias = delta.reshape(b, m.out_channels, -1).sum(dim=2)
    if m.bias is not None:
        out["bias"].copy_(bias)


def step_and_capture(
    problem: Problem, theta: Params, v: Params, xb: torch.Tensor, yb: torch.Tensor, *, lr: float
) -> Layers:
    """One optimiser step in place on (theta, v), as engine.sgd.sgd_step, and each layer's
    (prefix, layer, input a, delta) captured at theta_t (before the update), from which
    rows_of_grads assembles per-sample gradients. Needs supports_fold(problem.model)."""
    grads, layers = fold_backward(problem, theta, xb, yb, param_grads=True)
    assert grads is not None
    apply_update(problem, theta, v, grads, lr=lr)
    return layers


def capture_layers(problem: Problem, theta: Params, xb: torch.Tensor, yb: torch.Tensor) -> Layers:
    """step_and_capture's layers without a step."""
    return fold_backward(problem, theta, xb, yb, param_grads=False)[1]


def rows_of_grads(theta: Params, layers: Layers, rows: slice = slice(None)) -> torch.Tensor:
    """(len(rows), P) per-sample gradients of the batch's samples `rows`, in theta's key order,
    from captured layers (capture_layers / step_and_capture); each layer writes its block of
    columns in place."""
    n = layers[0][2][rows].shape[0]
    first = next(iter(theta.values()))
    sizes = [t.numel() for t in theta.values()]
    flat = torch.empty(n, sum(sizes), dtype=first.dtype, device=first.device)
    views = {
        k: cols.view(n, *theta[k].shape)
        for k, cols in zip(theta, flat.split(sizes, dim=1), strict=True)
    }
    for pre, m, a, delta in layers:
        kinds = ("weight", "bias") if getattr(m, "bias", None) is not None else ("weight",)
        _layer_grads_into(m, a[rows], delta[rows], {kind: views[pre + kind] for kind in kinds})
    return flat


def row_chunks(n_rows: int, n_params: int, *, itemsize: int, max_bytes: int) -> list[slice]:
    """Slices of range(n_rows) whose (rows, n_params) gradient block stays under max_bytes
    (at least one row each)."""
    step = max(1, max_bytes // max(1, n_params * itemsize))
    return [slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step)]
