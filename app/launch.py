"""Start the app: `python -m app.launch [streamlit run options]`, from the repository root.

The same server as `streamlit run app/main.py [options]`, except that the modules the pages
import at their top (torch, the engine, pandas, plotly: about 3 s on 2 cores) are imported
before the server answers. Streamlit runs the pages in this process, so they find those modules
in sys.modules, and the first page a user opens does not wait for them (bench/app_pages.py:
the landing page's first load).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

APP = Path(__file__).resolve().parent
ROOT = APP.parent


def page_imports(files: Iterable[Path] | None = None) -> list[str]:
    """The absolute module names imported at the top level of `files` (default: app/main.py and
    every page in app/views), in order, without duplicates. `from P import name` lists P and,
    as a candidate, P.name (warm imports it only if it is a module)."""
    paths = list(files) if files is not None else [APP / "main.py", *sorted(APP.glob("views/*.py"))]
    names: list[str] = []
    for path in paths:
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
                names += [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
    return [n for n in dict.fromkeys(names) if n.split(".")[0] != "__future__"]


def _is_module(name: str) -> bool:
    parent, _, _ = name.rpartition(".")
    if not parent:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # the parent is not a package, or is missing
        return False


def warm(modules: Iterable[str]) -> list[str]:
    """Import each of `modules` that is a module; return those that failed to import (the page
    that needs one shows the error when it is opened, as it would without this)."""
    failed = []
    # st.cache_data decorators log "No runtime found" when imported before the server starts;
    # the caches themselves are made later, inside the runtime
    logging.disable(logging.WARNING)
    try:
        for name in modules:
            try:
                if _is_module(name):
                    importlib.import_module(name)
            except Exception:  # noqa: BLE001 - any failure is the page's to report
                failed.append(name)
    finally:
        logging.disable(logging.NOTSET)
    return failed


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for name in warm(page_imports()):
        print(f"app.launch: could not import {name}; the page that needs it will show why",
              file=sys.stderr)  # fmt: skip
    from streamlit.web import cli

    cli.main(["run", str(APP / "main.py"), *args], prog_name="streamlit")


if __name__ == "__main__":
    main()
