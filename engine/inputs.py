"""The training inputs as the model sees them, converted one batch at a time.

A run keeps its images as uint8 (N, C, H, W); the model sees ``images / 255`` as float. Holding
that float copy of the whole training set costs 4x (float32) or 8x (float64) the images: 600 MB
for 50k 32x32 RGB images in float32, on the GPU when training there. ``Inputs`` holds the uint8
images on the run's device and converts only the rows asked for, with the same arithmetic as
converting everything first (``images.to(dtype) / 255`` is elementwise), so replay stays bit-exact
with runs trained before it. A head-mode run's features (engine.backbone) are float already and
are held as they are, in the run's dtype.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Inputs"]


class Inputs:
    """Model inputs (N, ...) of one dtype on one device, read by indexing.

    ``inputs[idx]`` (an index tensor, a slice or an int) returns a float tensor of `dtype`:
    ``store[idx].to(dtype) / 255`` for uint8 images, ``store[idx]`` for float features.
    ``dtype``, ``device``, ``shape`` and ``len`` are those of the float inputs.
    """

    def __init__(self, store: torch.Tensor, dtype: torch.dtype) -> None:
        self._images = store.dtype == torch.uint8
        self.store = store if self._images else store.to(dtype)
        self.dtype = dtype

    @classmethod
    def of(cls, store: torch.Tensor, *, dtype: torch.dtype, device: torch.device | str) -> Inputs:
        """Inputs of uint8 images or float features, moved to `device`."""
        return cls(store.to(device), dtype)

    @property
    def device(self) -> torch.device:
        return self.store.device

    @property
    def shape(self) -> torch.Size:
        return self.store.shape

    def __len__(self) -> int:
        return int(self.store.shape[0])

    def __getitem__(self, idx: Any) -> torch.Tensor:
        rows = self.store[idx]
        return rows.to(self.dtype) / 255.0 if self._images else rows

    def subset(self, rows: torch.Tensor) -> Inputs:
        """Inputs of the rows `rows` (an index tensor), still converted per batch."""
        return Inputs(self.store[rows.to(self.store.device)], self.dtype)

    def element_size(self) -> int:
        """Bytes of one float input value (the dtype's size, as a float tensor's)."""
        return torch.empty((), dtype=self.dtype).element_size()

    def to(self, dtype: torch.dtype) -> Inputs:
        """The same inputs converted to another float dtype (features are re-cast; images stay
        uint8 and convert per batch)."""
        return Inputs(self.store, dtype)

    def all(self) -> torch.Tensor:
        """Every input as one float tensor (N, ...): the copy this class avoids; for small sets."""
        return self[:]

    def store_bytes(self) -> int:
        """Bytes held on the device."""
        return self.store.element_size() * self.store.numel()
