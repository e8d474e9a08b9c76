"""The replay iterator of materialised per-sample gradients hands them out in row blocks."""

from __future__ import annotations

import pytest
import torch

from engine.influence import selfinfluence
from engine.influence.rowgrads import row_chunks
from engine.influence.selfinfluence import window_grads
from engine.loading import LoadedRun


def _by_step(loaded: LoadedRun, max_bytes: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    out: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for t, idx, g in window_grads(loaded, start=0, max_bytes=max_bytes):
        assert g.shape[0] == idx.shape[0]
        out.setdefault(t, []).append((idx, g))
    return {t: (torch.cat([i for i, _ in b]), torch.cat([g for _, g in b])) for t, b in out.items()}


def test_row_chunks_cover_the_rows_once_within_the_budget() -> None:
    chunks = row_chunks(10, 100, itemsize=4, max_bytes=1200)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert row_chunks(5, 10**9, itemsize=8, max_bytes=1) == [slice(i, i + 1) for i in range(5)]
    assert row_chunks(5, 10, itemsize=4, max_bytes=2**30) == [slice(0, 5)]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("fixture", ["tiny_run", "resnet_run"])
def test_blocks_of_a_step_are_its_whole_batch_split_by_rows(
    request: pytest.FixtureRequest, fixture: str, fused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: LoadedRun = request.getfixturevalue(fixture)
    if not fused:  # the vmap route models without a folded backward take
        monkeypatch.setattr(selfinfluence, "supports_fold", lambda model: False)
    n_params = sum(t.numel() for t in loaded.final_theta.values())
    itemsize = next(iter(loaded.final_theta.values())).element_size()
    whole = _by_step(loaded, 2**40)
    blocks = list(window_grads(loaded, start=0, max_bytes=3 * n_params * itemsize))
    assert max(g.shape[0] for _, _, g in blocks) == 3
    assert len(blocks) > len(whole)
    split = _by_step(loaded, 3 * n_params * itemsize)
    assert split.keys() == whole.keys() == set(range(loaded.traj.n_steps))
    for t, (idx, g) in whole.items():
        assert torch.equal(split[t][0], idx) and torch.equal(split[t][0], loaded.traj.batch(t))
        torch.testing.assert_close(split[t][1], g, rtol=1e-12, atol=1e-12 * float(g.abs().max()))
