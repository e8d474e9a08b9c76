"""The catalog of estimators (engine.influence.methods) over the registry (engine.influence.registry)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from engine.config import ConfigError
from engine.influence.methods import (
    check_method_options,
    fast_methods,
    get_method,
    method_names,
    method_options,
    query_methods,
    run_method,
)
from engine.influence.queries import Query
from engine.influence.registry import METHODS, register_method
from engine.loading import LoadedRun
from engine.options import option


def test_every_builtin_is_registered_with_its_capabilities() -> None:
    names = method_names()
    for m in (
        "sgd-influence",
        "sgd-influence-last",
        "hydra",
        "tracin",
        "loss",
        "margin",
        "combined",
    ):
        assert m in names
    assert fast_methods() == ["hydra", "tracin"]  # the Hessian-free adjoint methods
    assert "sgd-influence" in query_methods() and "loss" not in query_methods()
    assert get_method("combined").composite and not get_method("hydra").composite
    with pytest.raises(ConfigError, match="unknown method 'nope'; choose one of"):
        get_method("nope")


def test_unknown_options_are_named_before_any_work() -> None:
    with pytest.raises(ConfigError, match=r"no option 'dampng'.*its options: .*damping"):
        check_method_options(get_method("influence-function"), {"dampng": 0.1})


def test_a_registered_method_runs_with_its_defaults_and_options(tiny_run: LoadedRun) -> None:
    @dataclass(frozen=True)
    class ConstantOptions:
        value: float = option(2.0, help="the score")
        sign: str = option("plus", choices=("plus", "minus"), help="its sign")

    @register_method(
        "test-constant", description="a constant", options=ConstantOptions(), uses_query=False
    )
    def constant(
        loaded: LoadedRun, query: Query, *, progress: object = None, value: float, sign: str
    ) -> np.ndarray:
        return np.full(len(loaded.bundle.train), value if sign == "plus" else -value)

    try:
        assert run_method("test-constant", tiny_run, Query("val")).tolist() == [[2.0]] * 30
        out = run_method("test-constant", tiny_run, Query("val"), value=1.0, sign="minus")
        assert out.shape == (30, 1) and (out == -1.0).all()  # (N,) comes back as (N, 1)
        with pytest.raises(ConfigError, match="^sign must be one of plus, minus") as e:
            run_method("test-constant", tiny_run, Query("val"), sign="both")  # before any work
        assert e.value.param == "sign"
        assert method_options("test-constant")[0] == {
            "name": "value",
            "default": 2.0,
            "help": "the score",
            "choices": None,
        }
    finally:
        METHODS.pop("test-constant")


def test_ensemble_averages_standardised_scores_over_seeded_runs(
    tiny_copy_loaded: LoadedRun,
) -> None:
    from engine.influence.ensemble import ensemble_runs

    q = Query("val")
    one = run_method("ensemble", tiny_copy_loaded, q, base="margin", runs=1)
    margin = run_method("margin", tiny_copy_loaded, q)
    np.testing.assert_allclose(one, margin / margin.std(), rtol=1e-12)
    two = run_method("ensemble", tiny_copy_loaded, q, base="margin", runs=2)
    (other,) = ensemble_runs(tiny_copy_loaded, 2)[1:]  # trained once, then reused
    assert other.cfg.seed == tiny_copy_loaded.cfg.seed + 101 and other.data == tiny_copy_loaded.data
    m2 = run_method("margin", other, q)
    np.testing.assert_allclose(two, (margin / margin.std() + m2 / m2.std()) / 2, rtol=1e-10)
    with pytest.raises(ConfigError, match="base must be a plain method"):
        run_method("ensemble", tiny_copy_loaded, q, base="combined")
