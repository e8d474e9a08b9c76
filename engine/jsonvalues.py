"""Results as plain JSON values (job files, `retracer ... --json`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

__all__ = ["jsonable"]


def jsonable(x: Any) -> Any:
    """`x` as JSON values: dicts / lists / tuples / sets / dataclasses / frames / arrays recursively,
    NaN and infinities as None (JSON has neither), anything else unknown as its str()."""
    if x is None or isinstance(x, str | bool | int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set):
        return [jsonable(v) for v in x]
    if hasattr(x, "to_dict") and callable(x.to_dict):
        return jsonable(x.to_dict())
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if hasattr(x, "tolist"):
        return jsonable(x.tolist())
    return str(x)
