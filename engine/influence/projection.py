"""Random projections R (d x P) for the TRAK-style feature store, generated from a seed.

Both keep E[R^T R] = I, so <R x, R y> is an unbiased estimate of <x, y> (Johnson-Lindenstrauss):

- ``srht`` (default, fast): subsampled randomized Hadamard transform,
  R x = (1/sqrt(d)) * (H diag(s) x_pad)[S], with s random signs (P,), x zero-padded to the next
  power of two P', H the unnormalised Walsh-Hadamard matrix (applied in O(P' log P') per vector)
  and S d rows drawn without replacement. Never materialised; costs ~log2(P') passes over a batch.
- ``gaussian``: R_ij ~ N(0, 1/d), generated in column chunks from (seed, chunk); chunks are kept in
  memory when P*d*4 bytes fits ``cache_bytes``, otherwise regenerated on every call (slow).
- When d >= P the projection is the identity (``identity``): the store is then exact.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from typing import Any

import torch

from engine.config import ConfigError

PROJECTORS = ("srht", "gaussian")


class Projector(ABC):
    """x (B, P) -> R x (B, d)."""

    dim: int
    n_params: int
    seed: int
    kind: str

    @abstractmethod
    def project(self, x: torch.Tensor) -> torch.Tensor: ...

    def meta(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "n_params": self.n_params, "seed": self.seed}


class IdentityProjector(Projector):
    kind = "identity"

    def __init__(self, n_params: int, seed: int = 0) -> None:
        self.n_params, self.dim, self.seed = n_params, n_params, seed

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh-Hadamard transform along the last axis of x (B, n), n a power of two."""
    return fwht_(x.clone())


_BLOCK_LOG2 = 6
# rows whose butterfly stages run together: the block stays in the CPU's cache across its stages
_BUTTERFLY_BYTES = 1 << 21
# the zero-padded copy SRHT transforms is made for at most this many bytes of rows at a time
_PADDED_BYTES = 1 << 26
_HADAMARD: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def hadamard(n: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The dense unnormalised Hadamard matrix (n, n), n a power of two (Sylvester), cached."""
    key = (n, dtype, device)
    if key not in _HADAMARD:
        h = torch.ones(1, 1, dtype=dtype, device=device)
        while h.shape[0] < n:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        _HADAMARD[key] = h
    return _HADAMARD[key]


def fwht_(x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """`fwht` that may overwrite x (contiguous (B, n)); use the returned tensor (`out`, a
    contiguous (B, n) buffer not overlapping x, when given: then no new tensor is allocated).

    The first log2(64) butterfly stages are one matrix product with the dense 64 x 64 Hadamard
    matrix (their strided access is the slow part of a butterfly loop); the later stages are
    butterflies written back into the same buffer, a block of rows (about 2 MiB) at a time so the
    block stays in cache through all its stages. About 6x faster than a stage-by-stage loop that
    builds new tensors on the projected store's (32, 65536) float32 batches; the row blocks took
    SRHT's projection of a (64, 61706) float32 batch from 43 to 29 ms on one core (a 32 MiB L3).
    """
    b, n = x.shape
    d = min(n, 1 << _BLOCK_LOG2)
    h = hadamard(d, dtype=x.dtype, device=x.device)
    if out is None:
        out = (x.reshape(-1, d) @ h).reshape(b, n)
    else:
        torch.matmul(x.view(-1, d), h, out=out.view(-1, d))
    rows = max(1, _BUTTERFLY_BYTES // (n * x.element_size()))
    for r in range(0, b, rows):
        _butterflies_(out[r : r + rows], d)
    return out


def _butterflies_(x: torch.Tensor, h: int) -> None:
    """The butterfly stages of span h, 2h, ... < n, in place on the rows of x (B, n)."""
    b, n = x.shape
    while h < n:
        y = x.view(b, n // (2 * h), 2, h)
        lo, hi = y[:, :, 0], y[:, :, 1]
        a = lo.clone()
        lo.add_(hi)
        torch.sub(a, hi, out=hi)  # elementwise, so writing over its own input is safe
        h *= 2


class SRHTProjector(Projector):
    kind = "srht"

    def __init__(self, n_params: int, dim: int, seed: int = 0) -> None:
        self.n_params, self.dim, self.seed = n_params, dim, seed
        self.padded = 1 << max(0, math.ceil(math.log2(n_params)))
        g = torch.Generator().manual_seed(int(seed))
        self.signs = (torch.randint(0, 2, (n_params,), generator=g) * 2 - 1).to(torch.float64)
        self.rows = torch.randperm(self.padded, generator=g)[:dim].sort().values
        self._signs: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self._local = threading.local()

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, P) -> (B, d), in row chunks whose padded copy (rows, P') stays under 64 MiB:
        at 96x96 RGB (P' = 2**20) a batch of 64 made a 256 MiB copy at once. The padded copy and
        the transform's output live in two buffers the calling thread keeps: allocating them per
        chunk cost about 6 of SRHT's 16.5 ms per row at P' = 2**20, in fresh pages."""
        b = x.shape[0]
        rows = min(b, max(1, _PADDED_BYTES // (self.padded * x.element_size())))
        z, w = self._buffers(rows, x.dtype, x.device)
        signs = self._signs_as(x.dtype, x.device)
        keep = self.rows.to(x.device)
        out = torch.empty(b, self.dim, dtype=x.dtype, device=x.device)
        for r in range(0, b, rows):
            n = min(rows, b - r)
            zr = z[:n]
            torch.mul(x[r : r + n], signs, out=zr[:, : self.n_params])
            zr[:, self.n_params :] = 0
            out[r : r + n] = fwht_(zr, out=w[:n])[:, keep]
        return out / math.sqrt(self.dim)

    def _signs_as(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, device)
        if key not in self._signs:
            self._signs[key] = self.signs.to(device=device, dtype=dtype)
        return self._signs[key]

    def _buffers(
        self, rows: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (>= rows, P') work buffers of this thread (threads may project at once)."""
        have = getattr(self._local, "buffers", None)
        if (
            have is None
            or have[0].shape[0] < rows
            or have[0].dtype != dtype
            or have[0].device != device
        ):
            have = tuple(
                torch.empty(rows, self.padded, dtype=dtype, device=device) for _ in range(2)
            )
            self._local.buffers = have
        return have[0], have[1]


class GaussianProjector(Projector):
    kind = "gaussian"

    def __init__(
        self,
        n_params: int,
        dim: int,
        seed: int = 0,
        *,
        chunk: int = 8192,
        cache_bytes: int = 1 << 28,
    ) -> None:
        self.n_params, self.dim, self.seed, self.chunk = n_params, dim, seed, chunk
        self._cache: dict[int, torch.Tensor] | None = (
            {} if n_params * dim * 4 <= cache_bytes else None
        )

    def _block(self, j0: int) -> torch.Tensor:
        if self._cache is not None and j0 in self._cache:
            return self._cache[j0]
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + j0)
        n = min(self.chunk, self.n_params - j0)
        r = torch.randn(n, self.dim, generator=g, dtype=torch.float32) / math.sqrt(self.dim)
        if self._cache is not None:
            self._cache[j0] = r
        return r

    def project(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.dim, dtype=x.dtype, device=x.device)
        for j0 in range(0, self.n_params, self.chunk):
            r = self._block(j0).to(device=x.device, dtype=x.dtype)
            out += x[:, j0 : j0 + r.shape[0]] @ r
        return out


def make_projector(n_params: int, dim: int, *, seed: int = 0, kind: str = "srht") -> Projector:
    if not isinstance(dim, int) or dim <= 0:
        raise ConfigError(f"dim must be a positive integer, got {dim!r}", param="dim")
    if kind not in PROJECTORS:
        raise ConfigError(f"projection must be one of {', '.join(PROJECTORS)}, got {kind!r}")
    if dim >= n_params:
        return IdentityProjector(n_params, seed)
    if kind == "gaussian":
        return GaussianProjector(n_params, dim, seed)
    return SRHTProjector(n_params, dim, seed)
