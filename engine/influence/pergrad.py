"""Per-sample gradients and their dot products with query directions, inside a replayed SGD step.

Three ways to get D[k, q] = <u_q, g_k(theta)> for the samples k of a batch (g_k the gradient of
sample k's own loss l(z_k; theta), u_q a query direction):

- ``fold``: folded into the replay step's own backward pass. For a linear layer the per-sample
  gradient is delta_k a_k^T (delta_k = dl_k/d output, a_k = the layer input), so
  <U, g_k> = delta_k^T U a_k, and for a convolution <U, g_k> = sum_pos delta_k * conv(a_k, U); an
  affine GroupNorm's are sums over positions of delta_k * xhat_k and delta_k. No per-sample
  tensor of size P is formed. Needs a model whose parametrised modules are all Linear, Conv2d
  (groups 1, zero padding) or GroupNorm, each called once per forward; ``supports_fold`` says.
- ``jvp``: a forward-mode JVP of the per-sample loss vector along each u_q (vmapped over q).
- ``vmap``: materialise per-sample gradients (B, P) with vmap(grad) and multiply by U (P, Q).

``step_with_dots`` runs one optimiser step with exactly the arithmetic of ``engine.sgd.sgd_step``
(both call ``engine.sgd.apply_update``) and returns D for that step's batch at theta_t (before the
update); ``batch_dots`` returns D alone, without a step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from engine.config import ConfigError
from engine.models import per_sample_loss
from engine.sgd import Problem, apply_update, batch_loss
from engine.trajectory import Params

DOTS = ("auto", "fold", "jvp", "vmap")


# -- flat <-> dict ------------------------------------------------------------------------------
def unflatten(theta: Params, flat: torch.Tensor) -> Params:
    """Split a (P, Q) matrix into {name: (Q, *shape)} in theta's key order."""
    out: Params = {}
    i = 0
    for k, t in theta.items():
        n = t.numel()
        out[k] = flat[i : i + n].T.reshape(flat.shape[1], *t.shape).contiguous()
        i += n
    return out


def unflatten_one(theta: Params, vec: torch.Tensor) -> Params:
    """Split one flat vector (P,) into views shaped like `theta` (key order)."""
    out: Params = {}
    i = 0
    for k, t in theta.items():
        n = t.numel()
        out[k] = vec[i : i + n].view_as(t)
        i += n
    return out


def flatten_batched(d: Params) -> torch.Tensor:
    """{name: (Q, *shape)} -> (P, Q)."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in d.values()], dim=1).T


def per_sample_grads(
    problem: Problem, theta: Params, xb: torch.Tensor, yb: torch.Tensor
) -> torch.Tensor:
    """Per-sample loss gradients (B, P) at theta, parameters flattened in theta's key order."""
    model = problem.model

    def one(th: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_loss(functional_call(model, th, (x[None],)), y[None])[0]

    g = vmap(grad(one), in_dims=(None, 0, 0))({k: t.detach() for k, t in theta.items()}, xb, yb)
    return torch.cat([g[k].reshape(xb.shape[0], -1) for k in theta], dim=1)


def jvp_dots(
    problem: Problem, theta: Params, xb: torch.Tensor, yb: torch.Tensor, u: Params
) -> torch.Tensor:
    """D (B, Q) = <u_q, g_k> by forward-mode JVPs of the per-sample losses; u is {name: (Q, *shape)}."""
    model = problem.model
    th = {k: t.detach() for k, t in theta.items()}

    def losses(p: Params) -> torch.Tensor:
        return per_sample_loss(functional_call(model, p, (xb,)), yb)

    def along(tangent: Params) -> torch.Tensor:
        return jvp(losses, (th,), (tangent,))[1]

    return vmap(along)(u).T.contiguous()


# -- the folded route -----------------------------------------------------------------------------
def _param_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))
    ]


def supports_fold(model: nn.Module) -> bool:
    """True when every parametrised module is a Linear, a plain Conv2d (groups 1, zero padding)
    or an affine GroupNorm."""
    for _, m in _param_modules(model):
        if isinstance(m, nn.Linear) or (isinstance(m, nn.GroupNorm) and m.affine):
            continue
        if (
            isinstance(m, nn.Conv2d)
            and m.groups == 1
            and m.padding_mode == "zeros"
            and not isinstance(m.padding, str)
        ):
            continue
        return False
    return True


class _Capture:
    """Forward hooks that keep each parametrised layer's input and output during one forward."""

    def __init__(self) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.reused: list[str] = []  # layers called twice in one forward (shared weights)


@contextlib.contextmanager
def _capturing(model: nn.Module) -> Iterator[_Capture]:
    cap = _Capture()
    handles = []
    for name, m in _param_modules(model):

        def hook(
            mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name
        ) -> None:
            if name in cap.inputs:
                cap.reused.append(name)
            cap.inputs[name] = inp[0].detach()
            cap.outputs[name] = out

        handles.append(m.register_forward_hook(hook))
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()


def _layer_dots(
    m: nn.Module, a: torch.Tensor, delta: torch.Tensor, uw: torch.Tensor, ub: torch.Tensor | None
) -> torch.Tensor:
    """(B, Q) contribution of one layer: <U_layer, per-sample gradient> from input a and output grad delta."""
    q = uw.shape[0]
    if isinstance(m, nn.Linear):
        # a (B, I), delta (B, O), uw (Q, O, I)
        out = torch.einsum("bo,qoi,bi->bq", delta, uw, a)
        if ub is not None:
            out = out + delta @ ub.T
        return out
    if isinstance(m, nn.GroupNorm):
        g = group_norm_grads(m, a, delta)  # uw, ub (Q, C)
        return g["weight"] @ uw.T + (g["bias"] @ ub.T if ub is not None else 0)
    assert isinstance(m, nn.Conv2d)
    o = m.out_channels
    w = uw.reshape(q * o, *uw.shape[2:])
    z = F.conv2d(a, w, None, m.stride, m.padding, m.dilation, 1)  # (B, Q*O, H', W')
    b = a.shape[0]
    d = delta.reshape(b, 1, o, -1)
    out = (z.reshape(b, q, o, -1) * d).sum(dim=(2, 3))
    if ub is not None:
        out = out + delta.sum(dim=(2, 3)) @ ub.T
    return out


Layers = list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]


def fold_backward(
    problem: Problem, theta: Params, xb: torch.Tensor, yb: torch.Tensor, *, param_grads: bool
) -> tuple[list[torch.Tensor] | None, Layers]:
    """One forward and one backward of the batch loss with every layer's input captured.

    Returns (batch-loss gradients in theta's key order, or None without param_grads;
    [(parameter-name prefix, layer, input a (B, ...), delta (B, ...))]) with delta the gradient of
    each sample's own loss with respect to the layer's output (the batch loss's, times B).
    """
    names = list(theta)
    leaves = {k: theta[k].detach().requires_grad_(True) for k in names}
    with _capturing(problem.model) as cap:
        loss = batch_loss(problem, leaves, xb, yb, None)
    if cap.reused:
        raise ConfigError(
            f"layer {cap.reused[0]!r} runs more than once per forward (shared weights): the folded "
            "per-sample route cannot see each use; use dots='jvp' or 'vmap'",
            param="dots",
        )
    mods = dict(_param_modules(problem.model))
    layer_names = list(cap.outputs)
    wrt = [leaves[k] for k in names] if param_grads else []
    grads_all = torch.autograd.grad(loss, wrt + [cap.outputs[n] for n in layer_names])
    bsz = xb.shape[0]
    layers = [
        (f"{n}." if n else "", mods[n], cap.inputs[n], delta * bsz)
        for n, delta in zip(layer_names, grads_all[len(wrt) :], strict=True)
    ]
    return (list(grads_all[: len(wrt)]) if param_grads else None), layers


def grads_and_dots(
    problem: Problem,
    theta: Params,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    u: Params | None,
    method: str = "fold",
    param_grads: bool = True,
) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    """(batch-loss gradients in theta's key order, D (B, Q)) at theta, from one backward pass.

    u: query directions {name: (Q, *shape)} or None (no dots). method: fold | jvp | vmap.
    D[k, q] = <u_q, grad l(z_k; theta)>: the per-sample loss gradient, not divided by B.
    param_grads=False skips the batch gradient (returned as None) where the route allows it.
    """
    names = list(theta)
    leaves = {k: theta[k].detach().requires_grad_(True) for k in names}
    dots: torch.Tensor | None = None
    grads: list[torch.Tensor] | None = None
    if u is not None and method == "fold":
        grads, layers = fold_backward(problem, theta, xb, yb, param_grads=param_grads)
        total = None
        for pre, m, a, delta in layers:
            part = _layer_dots(m, a, delta, u[pre + "weight"], u.get(pre + "bias"))
            total = part if total is None else total + part
        dots = total
    else:
        if param_grads:
            loss = batch_loss(problem, leaves, xb, yb, None)
            grads = list(torch.autograd.grad(loss, [leaves[k] for k in names]))
        if u is not None:
            if method == "jvp":
                dots = jvp_dots(problem, theta, xb, yb, u)
            elif method == "vmap":
                dots = per_sample_grads(problem, theta, xb, yb) @ flatten_batched(u)
            else:
                raise ValueError(f"unknown dot-product method {method!r}")
    return grads, dots


def group_norm_grads(
    m: nn.GroupNorm, a: torch.Tensor, delta: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-sample gradients {"weight", "bias"}: (B, C) each, of an affine GroupNorm y = xhat *
    weight + bias (per channel), from its input a (B, C, ...) and delta = dl_k / dy (B, C, ...):
    d weight = sum over positions of delta * xhat, d bias = sum of delta. xhat normalises each
    sample on its own, so these are the sample's own gradients."""
    xhat = F.group_norm(a, m.num_groups, None, None, m.eps)
    b, c = a.shape[0], a.shape[1]
    return {
        "weight": (delta * xhat).reshape(b, c, -1).sum(2),
        "bias": delta.reshape(b, c, -1).sum(2),
    }


def batch_dots(
    problem: Problem, theta: Params, xb: torch.Tensor, yb: torch.Tensor, u: Params, *, method: str
) -> torch.Tensor:
    """D (B, Q) = <u_q, grad l(z_k; theta)> for the batch, without an optimiser step."""
    _, dots = grads_and_dots(problem, theta, xb, yb, u=u, method=method, param_grads=False)
    assert dots is not None
    return dots


def step_with_dots(
    problem: Problem,
    theta: Params,
    v: Params,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    lr: float,
    u: Params | None,
    method: str = "fold",
) -> torch.Tensor | None:
    """One optimiser step in place on (theta, v) (engine.sgd.apply_update, as sgd_step) and D (B, Q) at theta_t.

    u: query directions {name: (Q, *shape)} or None (no dots, plain replay). method: fold | jvp | vmap.
    D[k, q] = <u_q, grad l(z_k; theta_t)>: the per-sample loss gradient, not divided by B.
    """
    grads, dots = grads_and_dots(problem, theta, xb, yb, u=u, method=method)
    assert grads is not None
    apply_update(problem, theta, v, grads, lr=lr)
    return dots


def resolve_dots(model: nn.Module, method: str) -> str:
    """'auto' -> 'fold' where the model allows it, else 'jvp'."""
    if method not in DOTS:
        raise ConfigError(f"dots must be one of {', '.join(DOTS)}, got {method!r}")
    if method == "auto":
        return "fold" if supports_fold(model) else "jvp"
    if method == "fold" and not supports_fold(model):
        raise ConfigError(
            "dots='fold' needs a model made of Linear, Conv2d and GroupNorm layers only; use jvp "
            "or vmap"
        )
    return method
