"""The review queue: the order in which a person checks labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.loading import load_run
from engine.models import per_sample_loss
from engine.problem import split_logits
from engine.review import RANDOM_EVERY, review_queue
from engine.trusted import set_trusted


@pytest.fixture
def run(tiny_copy: Path) -> Path:
    return tiny_copy


def test_review_queue_puts_the_least_likely_labels_first_with_random_ones_between(
    run: Path,
) -> None:
    q = review_queue(run, "val")
    loaded = load_run(run, trusted=False)
    sp = loaded.bundle.val
    assert sorted(q) == sorted(sp.ids)
    with torch.no_grad():
        loss = per_sample_loss(split_logits(loaded.problem, loaded.final_theta, sp), sp.labels)
    by_loss = [sp.ids[i] for i in np.argsort(-loss.numpy(), kind="stable")]
    not_random = [sid for j, sid in enumerate(q) if (j + 1) % RANDOM_EVERY]
    assert not_random[:10] == [s for s in by_loss if s in set(not_random[:10])][:10]
    assert q[0] == by_loss[0]
    set_trusted(run, {q[0]: 0, q[5]: 1})
    assert review_queue(run, "val") == q[1:5] + q[6:]  # the order stays put as labels are checked
