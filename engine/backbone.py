"""Head mode: a frozen, pretrained backbone turns every image into a feature vector once, and the
run trains (and logs, replays, scores, retrains) only a small head on those features.

This is how most people train on a small custom dataset. The backbone is a torchvision
classification architecture (``resnet18``, ``mobilenet_v3_small``, ...) whose last linear layer is
removed, with its weights read from a local file (a ``torch.save`` of its state dict, read with
``weights_only=True``, or ``.safetensors``): nothing is downloaded. Or your own,
``python:FILE.py:FACTORY`` with FACTORY() -> nn.Module mapping (B, C, H, W) images to (B, D)
features (weights from the file when one is given, else whatever the factory loaded).

The backbone runs in eval mode under ``torch.inference_mode`` (BatchNorm uses its running
statistics, dropout is off), so the features are a deterministic function of the image; they are
computed at training time (with a progress bar) and stored in the run beside the images
(engine.data.Split.features, shape (N, D, 1, 1) float32): replay, every estimator, retraining and
the app see a logreg / mlp on D-dimensional inputs and never run the backbone again.
Inputs: images / 255, grey images repeated to 3 channels when the backbone wants 3, resized to
``size`` (bilinear) when given, and for torchvision backbones normalised with the ImageNet mean
and std their weights were trained with.
"""

from __future__ import annotations

import hashlib
import runpy
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.data import DataBundle, Split
from engine.models import USER_PREFIX
from engine.options import ParamError
from engine.progress import Progress

__all__ = [
    "HEAD_MODELS",
    "BackboneError",
    "BackboneSpec",
    "attach_features",
    "backbone_names",
    "check_backbone",
    "compute_features",
    "file_sha256",
    "load_backbone",
]

HEAD_MODELS = ("logreg", "mlp")  # the built-in heads; python:FILE.py:FACTORY heads are allowed too
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_HINT = "~/.cache/torch/hub/checkpoints/"


class BackboneError(ParamError):
    """A backbone that cannot be built or loaded; the message names the file or architecture."""


@dataclass(frozen=True)
class BackboneSpec:
    """A frozen backbone for head mode: what TrainConfig's backbone, backbone_weights and
    backbone_size hold, for callers that build their own TrainConfig (engine.experiments.fidelity)."""

    arch: str
    weights: str = ""
    size: int = 0

    def settings(self) -> dict[str, Any]:
        """The TrainConfig fields of this backbone."""
        return {"backbone": self.arch, "backbone_weights": self.weights, "backbone_size": self.size}


def backbone_names() -> list[str]:
    """torchvision's classification architectures (the names --backbone accepts)."""
    from torchvision import models

    return list(models.list_models(module=models))


def _torchvision(arch: str) -> nn.Module:
    from torchvision import models

    names = backbone_names()
    if arch not in names:
        raise BackboneError(
            f"unknown backbone {arch!r}: a torchvision classification architecture (e.g. "
            f"resnet18, mobilenet_v3_small, efficientnet_b0; {len(names)} in all) or "
            "python:FILE.py:FACTORY",
            param="backbone",
        )
    return models.get_model(arch, weights=None)


def _user_backbone(spec: str) -> nn.Module:
    path, sep, factory = spec[len(USER_PREFIX) :].rpartition(":")
    if not sep or not path or not factory:
        raise BackboneError(
            f"a user backbone is python:FILE.py:FACTORY, got {spec!r}", param="backbone"
        )
    file = Path(path).expanduser()
    if not file.is_file():
        raise BackboneError(f"backbone file {file} does not exist ({spec})", param="backbone")
    try:
        make = runpy.run_path(str(file)).get(factory)
    except Exception as e:  # the user's code: any error, named with its file
        raise BackboneError(f"backbone file {file} failed to run: {type(e).__name__}: {e}") from e
    if not callable(make):
        raise BackboneError(f"backbone file {file} has no function {factory!r}", param="backbone")
    try:
        net = make()
    except Exception as e:  # noqa: BLE001 - the user's factory
        raise BackboneError(f"{factory}() in {file} failed: {type(e).__name__}: {e}") from e
    if not isinstance(net, nn.Module):
        raise BackboneError(f"{factory} in {file} returned {type(net).__name__}, not an nn.Module")
    return net


def _weights_hint(arch: str) -> str:
    if arch.startswith(USER_PREFIX):
        return ""
    try:
        from torchvision import models

        url = models.get_model_weights(arch).DEFAULT.url
    except Exception:  # noqa: BLE001 - an architecture without published weights
        return ""
    return f" (torchvision's {arch} weights are {url}; torch keeps downloaded ones in {CACHE_HINT})"


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch.save file (weights_only; a checkpoint
    dict with a "state_dict" or "model" entry is unwrapped)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file
        raise BackboneError(
            f"backbone weights {path} cannot be read ({type(e).__name__}: {e}); give a torch.save "
            "of a state dict or a .safetensors file",
            param="backbone_weights",
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"backbone weights {path} hold no state dict", param="backbone_weights")
    return state


def _drop_last_linear(net: nn.Module) -> str:
    """Replace the network's last nn.Linear (the classifier) by identity, so that it maps images
    to the classifier's input features (resnet's fc, the classifier of mobilenet / efficientnet /
    convnext / vgg / densenet, vit's heads.head); returns that layer's name."""
    last = None
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    if last is None:
        raise BackboneError("the backbone has no linear classifier to remove", param="backbone")
    parent = net.get_submodule(last.rpartition(".")[0]) if "." in last else net
    setattr(parent, last.rpartition(".")[2], nn.Identity())
    return last


def check_backbone(arch: str, weights: str) -> None:
    """The cheap checks of load_backbone, without building anything: a known architecture (or a
    python: spec) and a weights file that exists. Raises BackboneError."""
    user = arch.startswith(USER_PREFIX)
    if not user and arch not in backbone_names():
        _torchvision(arch)  # raises, naming the choices
    if not weights and not user:
        raise BackboneError(
            f"--backbone {arch} needs --backbone-weights FILE{_weights_hint(arch)}",
            param="backbone_weights",
        )
    if weights and not Path(weights).expanduser().is_file():
        raise BackboneError(
            f"backbone weights not found: {Path(weights).expanduser()}; Retracer never "
            f"downloads, put the file there{_weights_hint(arch)}",
            param="backbone_weights",
        )


def load_backbone(arch: str, weights: str) -> nn.Module:
    """The frozen feature extractor: eval mode, no gradients. Raises BackboneError naming the
    architecture or file (a missing file says where to put it; nothing is downloaded)."""
    check_backbone(arch, weights)
    user = arch.startswith(USER_PREFIX)
    path = Path(weights).expanduser() if weights else None
    net = _user_backbone(arch) if user else _torchvision(arch)
    # the classifier goes before the weights are read: a checkpoint fine-tuned on any number of
    # classes fits (its classifier is not used)
    head = None if user else _drop_last_linear(net)
    if path is not None:
        state = read_state(path)
        if head is not None:
            state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).strip().splitlines()[:3]]
            raise BackboneError(
                f"backbone weights {path} do not fit {arch}: {' '.join(lines)}",
                param="backbone_weights",
            ) from e
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _wants_channels(net: nn.Module) -> int | None:
    for mod in net.modules():
        if isinstance(mod, nn.Conv2d):
            return int(mod.in_channels)
    return None


def compute_features(
    net: nn.Module,
    images: torch.Tensor,
    *,
    size: int = 0,
    imagenet: bool = True,
    batch_size: int = 256,
    device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Features (N, D, 1, 1) float32 of uint8 images (N, C, H, W); see the module docstring.
    Raises BackboneError when the backbone fails on these images or gives non-finite features."""
    device = device or torch.device("cpu")
    net = net.to(device)
    want = _wants_channels(net)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    out: list[torch.Tensor] = []
    n = images.shape[0]
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            x = images[i : i + batch_size].to(device=device, dtype=torch.float32) / 255.0
            if want == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            if size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            if imagenet and x.shape[1] == 3:
                x = (x - mean) / std
            try:
                f = net(x)
            except Exception as e:  # the architecture refuses these images (size, channels)
                raise BackboneError(
                    f"the backbone fails on {tuple(x.shape[1:])} inputs: {type(e).__name__}: {e}; "
                    "try --backbone-size 224",
                    param="backbone_size",
                ) from e
            if isinstance(f, tuple | list):
                f = f[0]
            out.append(f.reshape(f.shape[0], -1).float().cpu())
            if progress is not None:
                progress(min(i + batch_size, n), n)
    feats = torch.cat(out) if out else torch.zeros(0, 1)
    if not torch.isfinite(feats).all():
        raise BackboneError("the backbone gave non-finite features (NaN or inf)", param="backbone")
    return feats.reshape(feats.shape[0], feats.shape[1], 1, 1).contiguous()


def attach_features(
    bundle: DataBundle,
    *,
    arch: str,
    weights: str,
    size: int = 0,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> DataBundle:
    """The bundle with every split's features (train, val, test and a backdoored run's attack
    split), computed by the frozen backbone; one progress count over all images."""
    net = load_backbone(arch, weights)
    parts: list[tuple[str, Split]] = [(s, bundle.split(s)) for s in ("train", "val", "test")]
    if bundle.attack is not None:
        parts.append(("attack", bundle.attack))
    total = sum(len(sp) for _, sp in parts)
    done = 0
    got: dict[str, Split] = {}
    for name, sp in parts:

        def tick(k: int, _n: int, base: int = done) -> None:
            if progress is not None:
                progress(base + k, total, None)

        feats = compute_features(net, sp.images, size=size, imagenet=not arch.startswith(USER_PREFIX),
                                 device=device, progress=tick)  # fmt: skip
        got[name] = replace(sp, features=feats)
        done += len(sp)
    return replace(
        bundle, train=got["train"], val=got["val"], test=got["test"], attack=got.get("attack")
    )


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file (recorded in the run: which weights made its features)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
