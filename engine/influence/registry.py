"""The table of influence estimators, filled by the estimator modules as they are imported.

Every estimator has the same signature::

    fn(loaded: LoadedRun, query: Query, *, progress: Progress | None, **options) -> np.ndarray

returning scores of shape (N_train, Q) for the Q query columns of `query` (Q = 1 for the
validation query), in the training split's order. Sign convention everywhere: score_k is the
estimated change of the query loss if sample k is removed; NEGATIVE = HARMFUL. Estimators that
ignore the query (loss, margin, random, itlm, ...) return (N_train, 1) and set uses_query=False.
A composite estimator (``combined``) merges other methods' scores: it also receives
``components=fn(method, query_kind, progress) -> (N_train,)``, given by the score store
(engine.influence.scorestore), so it never computes or stores scores itself.

This module is the bottom of the estimator package: it imports none of them. The catalog of
every built-in method, and running one by name, is engine.influence.methods.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["METHODS", "Components", "Estimator", "MethodSpec", "NoOptions", "register_method"]

Estimator = Callable[..., np.ndarray]
Components = Callable[[str, str, Any], np.ndarray]
"""components(method, query kind, progress) -> scores (N_train,) of another method (its defaults)."""


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered estimator and what it can do.

    options: an instance of the method's options dataclass, holding the values it runs with
    unless told otherwise (each field an engine.options.option with its help text).
    uses_query: its scores depend on the query (val / class / test / self); False: one column
    whatever the query. composite: it merges other methods' scores (needs ``components``).
    inputs: keyword arguments that are not options but precomputed inputs (e.g. ``u``, query
    gradients), accepted by run_method and never stored.
    """

    name: str
    fn: Estimator
    description: str
    options: Any = field(default_factory=NoOptions)
    uses_query: bool = True
    composite: bool = False
    inputs: tuple[str, ...] = ()

    @property
    def defaults(self) -> dict[str, Any]:
        """The default options as a dict (what params.json stores, updated by the request)."""
        return dataclasses.asdict(self.options)

    @property
    def option_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.options)]

    @property
    def hessian_free(self) -> bool:
        """An H := 0 adjoint method (hydra, tracin): it can be served from a projected store and
        has a self query."""
        return self.defaults.get("curvature") in ("decay", "none")


METHODS: dict[str, MethodSpec] = {}
"""Every registered method by name (filled as estimator modules are imported)."""


def register_method(
    name: str,
    *,
    description: str,
    options: Any = None,
    uses_query: bool = True,
    composite: bool = False,
    inputs: tuple[str, ...] = (),
) -> Callable[[Estimator], Estimator]:
    """Decorator: make `fn` available as method `name` (CLI --method, app, experiments).

    options: the method's options dataclass instance (its defaults); None for no options.
    """

    def deco(fn: Estimator) -> Estimator:
        opts = NoOptions() if options is None else options
        METHODS[name] = MethodSpec(name, fn, description, opts, uses_query, composite, inputs)
        return fn

    return deco
