"""One definition of each user-facing option: its default, help, label, bounds and choices.

A settings dataclass (engine.config.TrainConfig, engine.data.DataSpec) declares each field with
``option(...)``; the CLI parser (``add_arguments``) and the app's forms
(app/components/forms.py) are built from that metadata, so a flag and its form field cannot
drift apart. Errors about one parameter are ParamError(param=...): the message names the
parameter by its Python name (``batch_size must be a positive integer, got 0``); the CLI shows
it as the flag (``--batch-size``), the app as the form label (``Batch size``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

__all__ = [
    "LABELS",
    "Option",
    "ParamError",
    "add_arguments",
    "as_text",
    "field_default",
    "flag",
    "label_of",
    "option",
    "numeric_type",
    "option_fields",
    "parse_assignments",
    "options",
    "values_from_args",
]


class ParamError(ValueError):
    """Bad input, optionally for one named parameter (``param``, its Python name).

    The message starts with, or contains, the parameter's name; ``named(text)`` puts another
    spelling of it in that place (a CLI flag, a form label).
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def named(self, name: str) -> str:
        text = str(self)
        if self.param and self.param in text:
            return text.replace(self.param, name, 1)
        return text


@dataclass(frozen=True)
class Option:
    """What a user sees of one field: `label` in a form, `help` in both, `choices` or bounds.

    kind: how the text form of the value reads ("ints": "64,64"; "size": "28x28"); cli / form:
    whether the field is offered there at all. Errors name the field by `label` in the app.
    """

    help: str = ""
    label: str = ""
    hint: str = ""  # the form's note after the label, e.g. "empty = all"
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    kind: str = ""
    cli: bool = True
    form: bool = True


LABELS: dict[str, str] = {}
"""Form label by parameter name, for every field of an ``@options`` class."""

T = TypeVar("T")


def option(
    default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, **meta: Any
) -> Any:
    """A dataclass field with its Option metadata (``option(0.1, help="...", label="Learning rate")``)."""
    md = {"option": Option(**meta)}
    if factory is not None:
        return field(default_factory=factory, metadata=md)
    return field(default=default, metadata=md)


def options(cls: type[T]) -> type[T]:
    """Class decorator: record the form labels of the dataclass's option fields."""
    for f, opt in option_fields(cls):
        LABELS.setdefault(f.name, opt.label or f.name.replace("_", " ").capitalize())
    return cls


def option_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    """The (field, Option) pairs of a dataclass, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def flag(param: str) -> str:
    """The CLI flag of a parameter: ``batch_size`` -> ``--batch-size``."""
    return "--" + param.replace("_", "-")


def label_of(param: str) -> str:
    """The form label of a parameter (its name, readable, when no settings class declares it)."""
    return LABELS.get(param, param.replace("_", " ").capitalize())


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A dataclass field's default value (its factory called), None without one."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def as_text(value: Any, kind: str) -> Any:
    """The text form of a value of an \"ints\" / \"size\" option (None stays None)."""
    if value is None:
        return None
    if kind == "ints":
        return ",".join(str(v) for v in value)
    if kind == "size":
        return "x".join(str(v) for v in value)
    return value


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    skip: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """One ``--flag`` per option field of `cls` (its type, default, choices and help)."""
    hints = get_type_hints(cls)
    for f, opt in option_fields(cls):
        if not opt.cli or f.name in skip:
            continue
        default = (defaults or {}).get(f.name, field_default(f))
        kw: dict[str, Any] = {"dest": f.name, "help": opt.help or None}
        t = hints[f.name]
        if t is bool:
            kw.update(action="store_true", default=bool(default))
        else:
            base = numeric_type(t)
            kw.update(
                default=as_text(default, opt.kind), type=base if base and not opt.kind else str
            )
            if opt.choices and not opt.help:  # the settings class validates: one clear line
                kw["help"] = " | ".join(opt.choices)
        parser.add_argument(flag(f.name), **kw)


def numeric_type(t: Any) -> type | None:
    """int or float for a field annotated int / float (optional or not), else None."""
    return {int: int, float: float, int | None: int, float | None: float}.get(t)


def parse_text(param: str, text: str | None, kind: str) -> Any:
    """The value of a text form ("64,64", "28x28"); None for an empty text."""
    if text is None or not str(text).strip():
        return None
    s = str(text).replace(" ", "")
    try:
        if kind == "ints":
            return [int(x) for x in s.split(",") if x]
        if kind == "size":
            h, w = (int(x) for x in s.lower().split("x"))
            return (h, w)
    except ValueError as e:
        what = "be comma-separated integers" if kind == "ints" else "look like 28x28"
        raise ParamError(f"{param} must {what}, got {text!r}", param=param) from e
    return text


def parse_assignments(cls: type, items: Sequence[str], *, what: str = "option") -> dict[str, Any]:
    """{name: value} of ["key=value", ...] typed by the fields of dataclass `cls` (bool: true /
    false; "none" for an optional field); ParamError naming a bad item."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise ParamError(
                f"{what} {item!r}: expected KEY=VALUE with KEY one of {', '.join(names) or 'none'}",
                param=what,
            )
        out[key] = _typed(key, text.strip(), hints[key], what)
    return out


def _typed(key: str, text: str, t: Any, what: str) -> Any:
    args = set(getattr(t, "__args__", ())) or {t}
    if text.lower() == "none" and type(None) in args:
        return None
    for kind in (bool, int, float):
        if kind in args:
            try:
                if kind is bool:
                    if text.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    return text.lower() in ("true", "1")
                return kind(text)
            except ValueError:
                if str in args:
                    return text
                raise ParamError(
                    f"{what} {key}={text!r}: expected {kind.__name__}", param=what
                ) from None
    return text


def values_from_args(cls: type, a: argparse.Namespace) -> dict[str, Any]:
    """{field: value} of the CLI option fields of `cls` present in the parsed arguments."""
    out: dict[str, Any] = {}
    for f, opt in option_fields(cls):
        if not opt.cli or not hasattr(a, f.name):
            continue
        v = getattr(a, f.name)
        out[f.name] = parse_text(f.name, v, opt.kind) if opt.kind else v
    return out
