"""Head mode: a frozen backbone's features computed once, cached in the run, and a head trained,
replayed, scored and retrained on them (engine.backbone)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.backbone import BackboneError, BackboneSpec, compute_features, load_backbone
from engine.config import ConfigError, TrainConfig
from engine.data import DataBundle, DataSpec
from engine.train import train

BACKBONE = """
import torch
from torch import nn

def make():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
"""

DATA = DataSpec(dataset="digits", n_train=120, n_val=40, n_test=40, seed=0)


def _train_backbone(tmp_path: Path) -> tuple[Path, Path]:
    """A small CNN with BatchNorm (fine in a frozen backbone), trained here for a few steps on
    digits with a throwaway classifier, and its body saved as a state dict; (file.py, weights)."""
    from sklearn.datasets import load_digits

    spec = tmp_path / "mybackbone.py"
    spec.write_text(BACKBONE)
    ns: dict[str, object] = {}
    exec(BACKBONE, ns)  # noqa: S102 - the test's own code
    body = ns["make"]()  # type: ignore[operator]
    torch.manual_seed(0)
    net = nn.Sequential(body, nn.Linear(16, 10))
    d = load_digits()
    x = torch.tensor(d.images[:600], dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target[:600])
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for i in range(0, 600, 50):
        loss = nn.functional.cross_entropy(net(x[i : i + 50]), y[i : i + 50])
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights = tmp_path / "backbone.pth"
    torch.save(body.state_dict(), weights)
    return spec, weights


@pytest.fixture(scope="module")
def head_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A logreg head on the features of a backbone this module trained; (run, backbone file,
    weights)."""
    tmp = tmp_path_factory.mktemp("head")
    spec, weights = _train_backbone(tmp)
    cfg = TrainConfig(model="logreg", epochs=3, batch_size=20, lr=0.1, standardize=True,
                      backbone=f"python:{spec}:make", backbone_weights=str(weights))  # fmt: skip
    train(tmp / "run", DATA, cfg)
    return tmp / "run", spec, weights


def test_features_are_computed_once_and_stored_with_the_images(
    head_run: tuple[Path, Path, Path],
) -> None:
    run, spec, weights = head_run
    b = DataBundle.load(run)
    assert b.train.features is not None and b.train.features.shape == (120, 16, 1, 1)
    assert b.val.features is not None and b.test.features is not None
    assert b.train.images.dtype == torch.uint8  # the pages still show the images
    assert b.input_shape == (16, 1, 1)
    again = compute_features(load_backbone(f"python:{spec}:make", str(weights)), b.train.images,
                             imagenet=False)  # fmt: skip
    assert torch.equal(again, b.train.features)  # eval mode: a deterministic function of the image


def test_the_head_replays_bit_exactly_and_its_retrain_reproduces_the_final_weights(
    head_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    import shutil

    from engine.changes import resolve_changes
    from engine.loading import load_run
    from engine.retrain import counterfactual
    from engine.verify import verify_replay
    from tests.engine.conftest import same_weights

    run, _, weights = head_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    hidden = weights.with_suffix(".gone")
    weights.rename(hidden)  # the run needs the backbone no more: its features are cached
    try:
        assert verify_replay(copy)["exact"]
        loaded = load_run(copy)
        assert loaded.problem.x.shape == (120, 16, 1, 1)
        assert same_weights(counterfactual(loaded, resolve_changes(loaded)), loaded.final_theta)
    finally:
        hidden.rename(weights)


def test_every_estimator_and_a_fresh_retrain_work_on_the_head(
    head_run: tuple[Path, Path, Path],
) -> None:
    import numpy as np

    from engine.influence.methods import run_method
    from engine.influence.queries import Query
    from engine.loading import load_run
    from engine.retrain import retrain

    run, _, _ = head_run
    loaded = load_run(run)
    for m in ("sgd-influence", "sgd-influence-last", "hydra", "tracin", "loss", "margin",
              "influence-function", "confident-learning"):  # fmt: skip
        s = run_method(m, loaded, Query("val"))
        assert s.shape[0] == 120 and np.isfinite(s).all(), m
    res = retrain(run, drop=loaded.bundle.train.ids[:5], mode="fresh", seeds=2, save=False)
    assert res["after"]["summary"]["test_acc"]["n"] == 2 and res["paired"] is True


def test_head_mode_keeps_hara_fidelity(head_run: tuple[Path, Path, Path]) -> None:
    """A convex head (logreg) on frozen features: the exact pass matches true leave-one-out as
    on logreg itself (Kendall tau ~.97 over 10 seeds; one seed here)."""
    from engine.experiments.fidelity import run_fidelity

    _, spec, weights = head_run
    res = run_fidelity("logreg", seeds=1, methods=["sgd-influence"],
                       backbone=BackboneSpec(f"python:{spec}:make", str(weights)))  # fmt: skip
    assert res.summary()["sgd-influence"]["kendall"] > 0.9


def test_a_torchvision_backbone_loads_a_checkpoint_fine_tuned_on_any_class_count(
    tmp_path: Path,
) -> None:
    """resnet18's own classifier (here a 10-class one, as a user's fine-tuned checkpoint) is
    removed before the weights are read; .pth and .safetensors both load."""
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(num_classes=10)
    pth, sft = tmp_path / "r18.pth", tmp_path / "r18.safetensors"
    torch.save({"state_dict": net.state_dict()}, pth)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(sft))
    images = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    a = compute_features(load_backbone("resnet18", str(pth)), images)
    b = compute_features(load_backbone("resnet18", str(sft)), images)
    assert a.shape == (4, 512, 1, 1) and torch.equal(a, b)
    cfg = TrainConfig(model="mlp", widths=[16], epochs=1, batch_size=20, backbone="resnet18",
                      backbone_weights=str(sft))  # fmt: skip
    train(tmp_path / "run", DataSpec(dataset="digits", n_train=40, n_val=20, n_test=20), cfg)
    from engine.verify import run_info

    info = run_info(tmp_path / "run")
    assert info["backbone"]["features"] == 512 and len(info["backbone"]["weights_sha256"]) == 64


def test_bad_backbones_are_refused_in_one_line_before_anything_is_written(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    from engine.cli import main

    with pytest.raises(
        BackboneError, match=r"not found: .*never downloads.*resnet18-f37072fd\.pth"
    ):
        load_backbone("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(BackboneError, match="needs --backbone-weights"):
        load_backbone("resnet18", "")
    with pytest.raises(BackboneError, match="unknown backbone 'resnet7'"):
        load_backbone("resnet7", str(tmp_path / "x.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save(resnet18(num_classes=3).layer1.state_dict(), wrong)
    with pytest.raises(BackboneError, match="do not fit resnet18"):
        load_backbone("resnet18", str(wrong))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot be read"):
        load_backbone("resnet18", str(junk))
    with pytest.raises(ConfigError, match="the head trained on its features: logreg, mlp"):
        TrainConfig(model="lenet5", backbone="resnet18").validate()
    with pytest.raises(ConfigError, match="augmentation off"):
        TrainConfig(model="logreg", backbone="resnet18", augment_shift=1).validate()
    argv = ["train", "--run-dir", str(tmp_path / "bad"), "--model", "logreg", "--backbone",
            "resnet18", "--backbone-weights", str(tmp_path / "missing.pth"), "--n-train", "40"]  # fmt: skip
    assert main(argv) == 2
    assert not (tmp_path / "bad").exists()
