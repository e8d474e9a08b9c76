"""Per-sample gradients materialised from the replay step's own backward pass (the fused route)."""

from __future__ import annotations

import pytest
import torch

from engine.influence.pergrad import per_sample_grads
from engine.influence.rowgrads import (
    capture_layers,
    conv_weight_grads,
    rows_of_grads,
    step_and_capture,
)
from engine.loading import LoadedRun
from engine.sgd import clone_params, sgd_step


@pytest.mark.parametrize("fixture", ["tiny_run", "conv_run", "std_run", "aug_run", "resnet_run"])
def test_fused_step_gives_vmap_per_sample_grads_and_the_same_update(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    loaded: LoadedRun = request.getfixturevalue(fixture)
    problem, traj = loaded.problem, loaded.traj
    theta, v = traj.load_checkpoint(0)
    for t in range(3):
        idx = traj.batch(t)
        xb, yb = problem.batch_inputs(idx, traj.aug_seed(t))
        ref = per_sample_grads(problem, theta, xb, yb)
        th2, v2 = clone_params(theta), clone_params(v)
        sgd_step(problem, th2, v2, idx, lr=traj.lr(t), aug_seed=traj.aug_seed(t))
        alone = rows_of_grads(theta, capture_layers(problem, theta, xb, yb))
        g = rows_of_grads(theta, step_and_capture(problem, theta, v, xb, yb, lr=traj.lr(t)))
        assert g.shape == ref.shape and torch.equal(g, alone)
        assert float((g - ref).abs().max()) <= 1e-12 * float(ref.abs().max())
        for k in theta:  # the step itself is the training step, bit for bit
            assert torch.equal(theta[k], th2[k]) and torch.equal(v[k], v2[k])


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "dilation", "size"),
    [(5, 1, 2, 1, 12), (3, 2, 1, 1, 9), (3, 2, 0, 2, 11), ((3, 2), (1, 3), (1, 0), (2, 1), 10)],
)
@pytest.mark.parametrize("route", ["grouped", "unfold"])
def test_conv_weight_grads_are_each_samples_own(
    kernel: object, stride: object, padding: object, dilation: object, size: int, route: str
) -> None:
    """The grouped-convolution route equals autograd on each sample alone, odd strides included
    (their output is larger than the kernel and is cropped)."""
    from torch import nn
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    m = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, dilation=dilation)  # type: ignore[arg-type]
    m = m.to(torch.float64)
    a = torch.randn(5, 3, size, size, dtype=torch.float64)
    delta = torch.randn_like(m(a))

    def one(w: torch.Tensor, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return (functional_call(m, {"weight": w, "bias": m.bias}, (x[None],))[0] * d).sum()

    ref = vmap(grad(one), in_dims=(None, 0, 0))(m.weight.detach(), a, delta)
    got = conv_weight_grads(m, a, delta, route=route)
    assert got.shape == ref.shape == (5, *m.weight.shape)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
