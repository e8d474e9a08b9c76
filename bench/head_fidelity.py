"""Hara et al.'s fidelity protocol in head mode: a logreg head on a frozen ResNet-18's features.

    OMP_NUM_THREADS=1 .venv/bin/python bench/head_fidelity.py [--seeds 10] [--work runs/head]

The backbone is torchvision's resnet18, trained here for a few epochs on the bundled digits of
every class except 1 and 7 (the protocol's two classes), so the head sees a transfer setting: a
pretrained network's features of classes it never learned. Its state dict is saved once in
--work and reused. Then `retracer fidelity --model logreg` runs on its features (standardised
per feature, as the protocol standardises pixels) and on the raw pixels, side by side: Kendall's
tau and the Jaccard index of each method against true leave-one-out. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def pretrained_backbone(path: Path, *, epochs: int = 3) -> Path:
    """resnet18 trained on digits without classes 1 and 7 (SGD, momentum .9); saved at path."""
    if path.exists():
        return path
    from sklearn.datasets import load_digits
    from torchvision.models import resnet18

    d = load_digits()
    keep = (d.target != 1) & (d.target != 7)
    x = torch.tensor(d.images[keep], dtype=torch.float32).unsqueeze(1).expand(-1, 3, -1, -1) / 16
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    y = torch.tensor(d.target[keep])
    torch.manual_seed(0)
    net = resnet18(num_classes=10)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def main() -> None:
    from engine.backbone import BackboneSpec
    from engine.experiments.fidelity import run_fidelity

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--work", default="runs/head")
    ap.add_argument("--methods", default="sgd-influence,hydra,influence-function")
    a = ap.parse_args()
    t0 = time.perf_counter()
    weights = pretrained_backbone(Path(a.work) / "resnet18-digits-no1no7.pth")
    print(f"backbone ready in {time.perf_counter() - t0:.0f} s: {weights}", flush=True)
    methods = a.methods.split(",")
    out = {}
    for label, spec in (("head", BackboneSpec("resnet18", str(weights))), ("pixels", None)):
        res = run_fidelity("logreg", seeds=a.seeds, methods=methods, backbone=spec)
        out[label] = {m: {k: row[k] for k in ("kendall", "kendall_std", "jaccard", "jaccard_std")}
                      for m, row in res.summary().items() if "kendall" in row}  # fmt: skip
    print(
        f"{'method':<20}{'head tau':>16}{'head Jaccard':>16}{'pixels tau':>16}{'pixels Jaccard':>16}"
    )
    for m in methods:
        h, p = out["head"].get(m), out["pixels"].get(m)
        if h is None or p is None:
            continue
        cells = [f"{r['kendall']:.3f} ± {r['kendall_std']:.3f}" for r in (h, p)]
        jac = [f"{r['jaccard']:.3f} ± {r['jaccard_std']:.3f}" for r in (h, p)]
        print(f"{m:<20}{cells[0]:>16}{jac[0]:>16}{cells[1]:>16}{jac[1]:>16}")
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out))


if __name__ == "__main__":
    main()
