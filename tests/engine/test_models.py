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


def test_the_resnets_take_any_image_size_and_use_groupnorm_only() -> None:
    import pytest

    for name in ("resnet9-gn", "resnet18-gn"):
        for shape in ((1, 8, 8), (3, 32, 32)):
            m = build_model(name, input_shape=shape, n_outputs=10, base_width=4)
            assert m(torch.zeros(2, *shape)).shape == (2, 10)
            assert any(isinstance(x, nn.GroupNorm) for x in m.modules())
    full = build_model("resnet18-gn", input_shape=(3, 32, 32), n_outputs=10)
    assert 11_000_000 < sum(p.numel() for p in full.parameters()) < 11_300_000  # ResNet-18's size
    from engine.models import ModelError

    with pytest.raises(ModelError, match="base_width must be a positive integer"):
        build_model("resnet9-gn", input_shape=(1, 8, 8), n_outputs=2, base_width=0)


def test_batchnorm_dropout_and_running_statistics_are_refused_by_name() -> None:
    import pytest

    from engine.models import ModelError, check_model

    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    with pytest.raises(ModelError, match=r"layer '1' \(BatchNorm2d\).*use nn.GroupNorm"):
        check_model(bn)
    with pytest.raises(ModelError, match=r"layer '2' \(Dropout\) drops units at random"):
        check_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Dropout(0.5)))
    with pytest.raises(ModelError, match="running statistics"):
        check_model(nn.Sequential(nn.InstanceNorm2d(3, track_running_stats=True)))
    check_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4)))


USER_MODEL = """
import torch
from torch import nn


class Net(nn.Module):  # not a Sequential: any nn.Module works
    def __init__(self, c, n):
        super().__init__()
        self.conv = nn.Conv2d(c, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, n)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def make(input_shape, n_classes):
    return Net(input_shape[0], n_classes)


def with_batchnorm(input_shape, n_classes):
    return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.LazyLinear(n_classes))
"""


def test_a_user_model_file_loads_trains_and_replays_bit_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from engine.cli import main
    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.models import ModelError
    from engine.train import train
    from engine.verify import verify_replay

    f = tmp_path / "mynet.py"
    f.write_text(USER_MODEL)
    m = build_model(f"python:{f}:make", input_shape=(1, 8, 8), n_outputs=3)
    assert m(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    data = DataSpec(dataset="digits", n_train=60, n_val=20, n_test=20, seed=0)
    cfg = TrainConfig(model=f"python:{f}:make", epochs=2, batch_size=10, lr=0.1)
    train(tmp_path / "run", data, cfg)
    assert verify_replay(tmp_path / "run")["exact"]
    with pytest.raises(ModelError, match=r"layer '1' \(BatchNorm2d\)"):
        build_model(f"python:{f}:with_batchnorm", input_shape=(1, 8, 8), n_outputs=3)
    with pytest.raises(ModelError, match="has no function 'nope'"):
        build_model(f"python:{f}:nope", input_shape=(1, 8, 8), n_outputs=3)
    with pytest.raises(ModelError, match="does not exist"):
        build_model(f"python:{tmp_path}/gone.py:make", input_shape=(1, 8, 8), n_outputs=3)
    # the CLI: a BatchNorm model is refused before anything is written, in one line
    bad = ["train", "--run-dir", str(tmp_path / "bad"), "--model", f"python:{f}:with_batchnorm",
           "--n-train", "40", "--epochs", "1"]  # fmt: skip
    assert main(bad) == 2
    assert not (tmp_path / "bad" / "trajectory").exists()
