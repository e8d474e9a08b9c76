"""The registry of influence estimators by name.

Every estimator has the same signature::

    fn(loaded: LoadedRun, query: Query, *, progress: Progress | None, **options) -> np.ndarray

returning scores of shape (N_train, Q) for the Q query columns of `query` (Q = 1 for the
validation query), in the training split's order. Sign convention everywhere: score_k is the
estimated change of the query loss if sample k is removed; NEGATIVE = HARMFUL. Estimators that
ignore the query (loss, margin, random, itlm, ...) return (N_train, 1) and set uses_query=False.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from engine.influence.queries import Query
    from engine.train import LoadedRun

Progress = Callable[[int, int, float | None], None]
Estimator = Callable[..., np.ndarray]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Estimator
    description: str
    uses_query: bool = True
    defaults: dict[str, Any] = field(default_factory=dict)


_METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str, *, description: str, uses_query: bool = True, **defaults: Any
) -> Callable[[Estimator], Estimator]:
    """Decorator: make `fn` available as method `name` (CLI --method, app, experiments)."""

    def deco(fn: Estimator) -> Estimator:
        _METHODS[name] = MethodSpec(name, fn, description, uses_query, dict(defaults))
        return fn

    return deco


def get_method(name: str) -> MethodSpec:
    _load_builtin()
    if name not in _METHODS:
        from engine.config import ConfigError

        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")
    return _METHODS[name]


def method_names() -> list[str]:
    _load_builtin()
    return list(_METHODS)


def check_method_options(spec: MethodSpec, options: dict[str, Any]) -> None:
    """ConfigError naming an option that `spec`'s estimator does not take (before any work)."""
    import inspect

    from engine.config import ConfigError

    params = inspect.signature(spec.fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the estimator checks its own options
    known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    known = [n for n in known if n != "progress"]
    bad = sorted(set(options) - set(known))
    if bad:
        raise ConfigError(
            f"method {spec.name!r} has no option {', '.join(map(repr, bad))}; "
            f"its options: {', '.join(known) or 'none'}"
        )


def run_method(
    name: str, loaded: LoadedRun, query: Query, *, progress: Progress | None = None, **options: Any
) -> np.ndarray:
    spec = get_method(name)
    check_method_options(spec, options)
    opts = {**spec.defaults, **options}
    out = np.asarray(spec.fn(loaded, query, progress=progress, **opts), dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    return out


_BUILTIN = ("adjoint", "influence_function", "itlm", "baselines", "combined", "votes")


def _load_builtin() -> None:
    import importlib

    for mod in _BUILTIN:
        try:
            importlib.import_module(f"engine.influence.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"engine.influence.{mod}":
                raise
