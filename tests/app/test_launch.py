"""app.launch: which modules it imports before the server starts, and that a failing one is
reported, not fatal. (The e2e tests start every server through it, via app/serve.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.launch import ROOT, page_imports, warm


def test_page_imports_lists_top_level_absolute_imports(tmp_path: Path) -> None:
    page = tmp_path / "page.py"
    page.write_text(
        "from __future__ import annotations\n"
        "import json, os.path as osp\n"
        "from engine import jobs\n"
        "from engine.selections import load_selections\n"
        "from . import sibling\n"
        "def f():\n"
        "    import csv\n"
    )
    assert page_imports([page]) == [
        "json",
        "os.path",
        "engine",
        "engine.jobs",
        "engine.selections",
        "engine.selections.load_selections",
    ]


def test_the_app_pages_imports_include_the_state_the_engine_and_components() -> None:
    names = set(page_imports())
    assert {"streamlit", "app.state", "engine.jobs", "app.components.gallery"} <= names
    assert not any(n.startswith("__future__") for n in names)


def test_warm_imports_modules_skips_names_and_reports_failures() -> None:
    code = (
        "import sys; from app.launch import warm; "
        "failed = warm(['json', 'engine.selections.load_selections', 'engine.selections', "
        "'no_such_module_xyz']); "
        "print(failed, 'engine.selections' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "['no_such_module_xyz'] True"


def test_warm_of_every_page_import_succeeds() -> None:
    assert warm(page_imports()) == []
