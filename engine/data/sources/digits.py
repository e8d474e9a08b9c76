"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 grayscale images, 10 classes."""

from __future__ import annotations

import torch

from engine.data.manifest import ImageSet
from engine.data.sources.base import SourceOptions, register


@register("digits")
def load_digits_source(arg: str, options: SourceOptions) -> ImageSet:
    """Pixel values 0..16 are scaled to 0..255 (uint8). Ids are ``digits-0000``..``digits-1796``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float64)
    images = torch.round(x * (255.0 / 16.0)).clamp(0, 255).to(torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(d.target, dtype=torch.int64)
    ids = [f"digits-{i:04d}" for i in range(len(labels))]
    return ImageSet(images=images, labels=labels, ids=ids, class_names=[str(i) for i in range(10)])
