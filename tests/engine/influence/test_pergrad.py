"""The folded route's captured backward refuses what it cannot see."""

from __future__ import annotations

import pytest
import torch

from engine.influence.pergrad import fold_backward
from engine.loading import LoadedRun


def test_a_layer_used_twice_is_refused_by_the_folded_route(tiny_run: LoadedRun) -> None:
    from dataclasses import replace

    from torch import nn

    from engine.config import ConfigError

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flat, self.lin, self.out = nn.Flatten(), nn.Linear(64, 64), nn.Linear(64, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.lin(self.lin(self.flat(x))))

    model = Twice().to(torch.float64)
    problem = replace(tiny_run.problem, model=model)
    theta = {k: p.detach() for k, p in model.named_parameters()}
    xb, yb = problem.x[:4], problem.y[:4]
    with pytest.raises(ConfigError, match="'lin' runs more than once per forward"):
        fold_backward(problem, theta, xb, yb, param_grads=False)
