"""Random projections of the feature store: the fast Hadamard transform and unbiasedness."""

from __future__ import annotations

import pytest
import torch

from engine.influence import projection
from engine.influence.projection import fwht, make_projector


def sylvester(n: int) -> torch.Tensor:
    """H_n by its definition H_2n = [[H, H], [H, -H]], independently of the engine's cache."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("n", [1, 2, 8, 64, 128, 1024])
def test_fwht_equals_the_dense_hadamard_product_and_keeps_its_input(n: int) -> None:
    x = torch.randn(3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    before = x.clone()
    assert torch.allclose(fwht(x), x @ sylvester(n).T, atol=1e-10)
    assert torch.equal(x, before)


def test_fwht_in_row_blocks_equals_the_dense_product(monkeypatch: pytest.MonkeyPatch) -> None:
    """Butterflies run on blocks of rows: two rows per block here, the last block one row."""
    n = 1024
    monkeypatch.setattr(projection, "_BUTTERFLY_BYTES", 2 * n * 8)
    x = torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(fwht(x), x @ sylvester(n).T, atol=1e-10)


def test_srht_in_row_chunks_equals_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    proj = make_projector(300, 64, seed=2)
    x = torch.randn(7, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    whole = proj.project(x)
    monkeypatch.setattr(projection, "_PADDED_BYTES", 3 * 512 * 8)  # 3 rows of P' = 512 per chunk
    torch.testing.assert_close(proj.project(x), whole, rtol=0, atol=1e-12)


def test_srht_is_its_definition_across_calls_that_reuse_its_buffers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R x = (H diag(s) x_pad)[S] / sqrt(d), whatever the calls before it left in the projector's
    work buffers: batches that grow and shrink, another dtype, another thread."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(projection, "_PADDED_BYTES", 3 * 512 * 8)
    proj = make_projector(300, 64, seed=4)
    assert isinstance(proj, projection.SRHTProjector)
    h = sylvester(512)

    def dense(x: torch.Tensor) -> torch.Tensor:
        pad = torch.zeros(x.shape[0], 512, dtype=torch.float64)
        pad[:, :300] = x.to(torch.float64) * proj.signs
        return (pad @ h.T)[:, proj.rows] / 64**0.5

    g = torch.Generator().manual_seed(5)
    for rows, dtype in [(1, torch.float64), (7, torch.float64), (2, torch.float64),
                        (5, torch.float32), (4, torch.float64)]:  # fmt: skip
        x = torch.randn(rows, 300, dtype=dtype, generator=g)
        got = proj.project(x)
        assert got.dtype == dtype and got.shape == (rows, 64)
        tol = 1e-10 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(got.to(torch.float64), dense(x), rtol=tol, atol=tol)
    xs = [torch.randn(r, 300, dtype=torch.float64, generator=g) for r in (6, 1, 4, 8)]
    with ThreadPoolExecutor(4) as pool:
        for x, got in zip(xs, pool.map(proj.project, xs), strict=True):
            torch.testing.assert_close(got, dense(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["srht", "gaussian"])
def test_projection_preserves_inner_products_on_average(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 300, dtype=torch.float64, generator=g)
    est = [
        float((p.project(x)[0] * p.project(x)[1]).sum())
        for p in (make_projector(300, 64, seed=s, kind=kind) for s in range(200))
    ]
    true = float(x[0] @ x[1])
    mean = sum(est) / len(est)
    spread = (sum((e - mean) ** 2 for e in est) / len(est)) ** 0.5
    assert abs(mean - true) < 4 * spread / len(est) ** 0.5
