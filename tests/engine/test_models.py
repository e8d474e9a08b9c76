"""Model construction: the fixed input standardisation layer."""

from __future__ import annotations

import torch
from torch import nn

from engine.models import Standardize, build_model


def test_standardize_matches_sklearn_standard_scaler() -> None:
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 3, 3, generator=g, dtype=torch.float64)
    x[:, 0, 0, 0] = 0.25  # a constant pixel: StandardScaler leaves it at 0 (scale 1)
    layer = Standardize.fit(x)
    ref = StandardScaler().fit_transform(x.reshape(40, -1).numpy())
    out = layer(x).reshape(40, -1).numpy()
    assert abs(out - ref).max() < 1e-12
    assert float(layer.std[0, 0, 0, 0]) == 1.0


def test_standardize_is_a_parameter_free_first_layer_and_keeps_the_init() -> None:
    x = torch.rand(10, 1, 8, 8, dtype=torch.float64)
    torch.manual_seed(3)
    plain = build_model("mlp", input_shape=(1, 8, 8), n_outputs=2, widths=[5])
    torch.manual_seed(3)
    std = build_model(
        "mlp", input_shape=(1, 8, 8), n_outputs=2, widths=[5], standardize=Standardize.fit(x)
    )
    assert isinstance(std, nn.Sequential) and isinstance(std[0], Standardize)
    assert not list(std[0].parameters())
    # parameter names shift by one; the values (the seeded init) are the same
    assert [t.shape for t in plain.parameters()] == [t.shape for t in std.parameters()]
    for a, b in zip(plain.parameters(), std.parameters(), strict=True):
        assert torch.equal(a, b)
    plain = plain.double()
    std = std.double()
    assert torch.allclose(std(x), plain((x - std[0].mean) / std[0].std))
