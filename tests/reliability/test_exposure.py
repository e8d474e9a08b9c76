"""The app binds to 127.0.0.1, watches no files and sends no usage statistics by default, and the
docs say how to expose it and what that means."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_streamlit_config_binds_to_localhost_only() -> None:
    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["address"] == "127.0.0.1"
    assert conf["server"]["fileWatcherType"] == "none"
    assert conf["browser"]["gatherUsageStats"] is False
    assert conf["server"].get("enableCORS", True) is True  # not loosened
    assert conf["server"].get("enableXsrfProtection", True) is True


def test_make_demo_binds_to_localhost() -> None:
    demo = [ln for ln in (ROOT / "Makefile").read_text().splitlines() if "-m app.launch" in ln]
    assert demo and all("--server.address 127.0.0.1" in ln for ln in demo)


def test_failure_modes_doc_explains_exposure() -> None:
    text = (ROOT / "README.md").read_text().split("## Failure modes", 1)[1]
    assert "--server.address 0.0.0.0" in text and "127.0.0.1" in text
    assert "anyone who can reach" in text.lower()
