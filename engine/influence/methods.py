"""Every built-in influence estimator, by name: look one up, list them, run one.

Importing this module imports each estimator module, which registers its methods in
engine.influence.registry. Callers outside the estimator package use this module; the
estimators themselves only import the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from engine.config import ConfigError
from engine.influence import (
    adjoint,
    baselines,
    combined,
    ensemble,
    influence_function,
    itlm,
    votes,
)
from engine.influence.registry import METHODS, Components, MethodSpec
from engine.options import option_fields
from engine.progress import Progress

if TYPE_CHECKING:
    from engine.influence.queries import Query
    from engine.loading import LoadedRun

__all__ = [
    "BUILTIN",
    "check_method_options",
    "fast_methods",
    "get_method",
    "method_options",
    "method_names",
    "parse_method_spec",
    "query_methods",
    "run_method",
]

BUILTIN = (adjoint, influence_function, itlm, baselines, combined, votes, ensemble)
"""The estimator modules (imported for their registrations)."""


def get_method(name: str) -> MethodSpec:
    """The spec of method `name`; ConfigError naming the known ones otherwise."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(method_names())}")
    return METHODS[name]


def method_names() -> list[str]:
    """Every method: the built-in modules in BUILTIN's order, each in its registration order,
    then any registered elsewhere."""
    rank = {m.__name__: i for i, m in enumerate(BUILTIN)}
    names = list(METHODS)
    return sorted(
        names, key=lambda n: (rank.get(METHODS[n].fn.__module__, len(rank)), names.index(n))
    )


def query_methods() -> list[str]:
    """Methods whose scores depend on the query (the class and test queries need one of these)."""
    return [m for m in method_names() if METHODS[m].uses_query]


def fast_methods(methods: list[str] | None = None) -> list[str]:
    """Of `methods` (default: all), the Hessian-free ones: they serve any test image at once from
    a projected store and have a self query."""
    return [
        m for m in (method_names() if methods is None else methods) if get_method(m).hessian_free
    ]


def check_method_options(spec: MethodSpec, options: dict[str, Any]) -> None:
    """ConfigError naming an option that `spec` does not have, or a value outside an option's
    choices (before any work). The options are the fields of the method's options dataclass."""
    known = spec.option_names
    bad = sorted(set(options) - set(known) - set(spec.inputs))
    if bad:
        raise ConfigError(
            f"method {spec.name!r} has no option {', '.join(map(repr, bad))}; "
            f"its options: {', '.join(known) or 'none'}"
        )
    for f, opt in option_fields(type(spec.options)):
        if opt.choices and f.name in options and options[f.name] not in opt.choices:
            raise ConfigError(
                f"{f.name} must be one of {', '.join(map(str, opt.choices))} for {spec.name}, "
                f"got {options[f.name]!r}",
                param=f.name,
            )


def method_options(name: str) -> list[dict[str, Any]]:
    """[{"name", "default", "help", "choices"}] of method `name`'s options (CLI and app help)."""
    spec = get_method(name)
    return [
        {"name": f.name, "default": getattr(spec.options, f.name), "help": opt.help,
         "choices": list(opt.choices) if opt.choices else None}
        for f, opt in option_fields(type(spec.options))
    ]  # fmt: skip


def run_method(
    name: str,
    loaded: LoadedRun,
    query: Query,
    *,
    progress: Progress | None = None,
    components: Components | None = None,
    **options: Any,
) -> np.ndarray:
    """Scores (N_train, Q) of method `name` for `query` with its defaults updated by `options`.

    components: the other methods' scores, for a composite method (engine.influence.scorestore
    gives it; ConfigError without it).
    """
    spec = get_method(name)
    check_method_options(spec, options)
    opts = {**spec.defaults, **options}
    if spec.composite:
        if components is None:
            raise ConfigError(
                f"{name} merges other methods' scores; run it through the score store"
            )
        opts["components"] = components
    out = np.asarray(spec.fn(loaded, query, progress=progress, **opts), dtype=np.float64)
    if out.ndim == 1:
        out = out[:, None]
    return out


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """'name' or 'name:key=value:key=value' (values parsed as int, float, else str) -> (name, options).

    Lets one table compare variants, e.g. 'influence-function:damping=1' (Hara et al.'s damping
    for the DNN) beside plain 'influence-function'.
    """
    name, *pairs = spec.split(":")
    opts: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"method option must look like key=value, got {pair!r} in {spec!r}")
        value: Any = text
        for conv in (int, float):
            try:
                value = conv(text)
                break
            except ValueError:
                continue
        opts[key.replace("-", "_")] = value
    return name, opts
