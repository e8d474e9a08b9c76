"""The projected store (engine.influence.featurestore): R phi_k per training sample, served for any query."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.influence import api
from engine.influence.featurestore import open_store, store_ready
from engine.influence.methods import run_method
from engine.influence.queries import Query
from engine.loading import LoadedRun
from engine.runs import RunError


@pytest.mark.parametrize("method", ["hydra", "tracin"])
def test_projected_store_agrees_with_exact_scores(wide_run: LoadedRun, method: str) -> None:
    path = api.build_projected_store(wide_run.run.path, method, dim=512, seed=0)
    st = open_store(wide_run.run.path, method, dim=512, seed=0)
    assert st.features.shape == (60, 512) and st.projector.kind == "srht"
    assert path == st.path
    agree = api.projection_agreement(wide_run.run.path, method, n_test=4, dim=512)
    assert len(agree["spearman"]) == 4 and agree["min"] > 0.9, agree


def test_identity_store_when_dim_exceeds_parameters(tiny_run: LoadedRun) -> None:
    api.build_projected_store(tiny_run.run.path, "hydra", dim=4096)
    st = open_store(tiny_run.run.path, "hydra", dim=4096)
    assert st.projector.kind == "identity"
    tid = tiny_run.bundle.test.ids[0]
    exact = run_method("hydra", tiny_run, Query("test", (tid,)))[:, 0]
    from engine.influence.api import gradients_of_test_samples

    np.testing.assert_allclose(
        st.scores(gradients_of_test_samples(tiny_run, [tid]))[:, 0], exact, rtol=1e-5, atol=1e-9
    )


def test_store_metadata_is_checked_on_reload(wide_run: LoadedRun) -> None:
    run_dir = wide_run.run.path
    assert not store_ready(run_dir, "tracin", dim=128, seed=3)
    path = api.build_projected_store(run_dir, "tracin", dim=128, seed=3)
    assert store_ready(run_dir, "tracin", dim=128, seed=3)
    meta = json.loads((path / "meta.json").read_text())
    meta["fingerprint"]["final_checkpoint_sha256"] = "0" * 64
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RunError, match="another run"):
        open_store(run_dir, "tracin", dim=128, seed=3)
    assert not store_ready(run_dir, "tracin", dim=128, seed=3)
    with pytest.raises(Exception, match="Hessian-free"):
        api.build_projected_store(run_dir, "sgd-influence", dim=128)
