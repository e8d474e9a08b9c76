"""engine.experiments.report.write_figure: HTML always, a PNG through kaleido and Chromium."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def _figure():  # type: ignore[no-untyped-def]
    import plotly.graph_objects as go

    return go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))


def test_the_png_is_rendered_by_kaleido_with_the_local_chromium(tmp_path: Path) -> None:
    pytest.importorskip("kaleido")
    if shutil.which("chromium") is None:
        pytest.skip("no Chromium on PATH")
    from engine.experiments.report import write_figure

    out = write_figure(tmp_path, "fig", _figure())
    assert out["note"] == "" and out["png"] == str(tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<html>" in (tmp_path / "fig.html").read_text()


def test_without_kaleido_the_html_is_written_and_the_note_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.experiments.report import write_figure

    monkeypatch.setitem(sys.modules, "kaleido", None)
    out = write_figure(tmp_path, "fig", _figure())
    assert out["png"] is None and "retracer[figures]" in out["note"]
    assert (tmp_path / "fig.html").is_file() and not (tmp_path / "fig.png").exists()
