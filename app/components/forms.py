"""Form fields built from the engine's option definitions (engine.options): one label, help text,
bound and choice list per setting, shared with the CLI's flags."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from engine.options import (
    Option,
    as_text,
    field_default,
    numeric_type,
    option_fields,
    parse_text,
)

__all__ = ["option_input", "option_value"]


def _field(cls: type, name: str) -> tuple[dataclasses.Field[Any], Option]:
    for f, opt in option_fields(cls):
        if f.name == name:
            return f, opt
    raise KeyError(f"{cls.__name__} has no option {name!r}")


def option_input(
    where: Any, cls: type, name: str, *, key: str, value: Any = None, disabled: bool = False,
    choices: list[Any] | None = None,
) -> Any:  # fmt: skip
    """One widget in `where` (st or a column) for option `name` of settings class `cls`: a
    checkbox, a select box (choices), a number input (bounds and step from the option) or a text
    input ("ints" / "size" kinds and strings). value: the initial value (default: the class's).
    Returns the widget's raw value; option_value turns it into the setting's value."""
    f, opt = _field(cls, name)
    label = opt.label + (f" ({opt.hint})" if opt.hint else "")
    init = field_default(f) if value is None else value
    t = get_type_hints(cls)[name]
    helptext = opt.help or None
    if t is bool:
        return where.checkbox(label, bool(init), key=key, help=helptext, disabled=disabled)
    if choices is not None or opt.choices:
        items = list(choices if choices is not None else opt.choices or ())
        index = items.index(init) if init in items else 0
        return where.selectbox(label, items, index=index, key=key, help=helptext, disabled=disabled)
    cast = numeric_type(t)
    if cast is not None and not opt.kind:
        kw: dict[str, Any] = {"key": key, "help": helptext, "disabled": disabled}
        if opt.minimum is not None:
            kw["min_value"] = cast(opt.minimum)
        if opt.maximum is not None:
            kw["max_value"] = cast(opt.maximum)
        if opt.step is not None:
            kw["step"] = cast(opt.step)
        if cast is float and init is not None and 0 < abs(float(init)) < 0.01:
            kw["format"] = "%.5f"
        elif cast is float and opt.minimum is not None and 0 < opt.minimum < 0.01:
            kw["format"] = "%.4f"
        return where.number_input(label, value=cast(init or 0), **kw)
    text = init if isinstance(init, str) else as_text(init, opt.kind) or ""
    return where.text_input(label, text, key=key, help=helptext, disabled=disabled)


def option_value(cls: type, name: str, raw: Any) -> Any:
    """The setting's value of a widget's raw value: text kinds parsed (a ParamError naming the
    option when they do not read), empty text as None, numbers cast to the field's type."""
    f, opt = _field(cls, name)
    if opt.kind:
        return parse_text(name, raw, opt.kind)
    t = get_type_hints(cls)[name]
    if isinstance(raw, str):
        return raw.strip() or None if t is not str else raw
    cast = numeric_type(t)
    return cast(raw) if cast is not None and raw is not None else raw
