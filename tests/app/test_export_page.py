"""Export page: lists the ticked samples and offers both downloads."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.selections import set_drop, set_relabel
from tests.app.conftest import page


def test_nothing_ticked_says_what_to_do_but_offers_the_label_file(run_dir: Path) -> None:
    at = AppTest.from_file(page("export.py"), default_timeout=30).run()
    assert not at.exception
    assert any("Nothing ticked yet" in i.value for i in at.info)
    assert len(at.get("download_button")) == 1


def test_ticked_rows_are_listed_and_downloadable(run_dir: Path) -> None:
    import pandas as pd

    ids = list(pd.read_csv(run_dir / "manifest.csv", dtype={"sample_id": str})["sample_id"][:3])
    set_drop(run_dir, ids[:2], True)
    set_relabel(run_dir, ids[2], 1)
    at = AppTest.from_file(page("export.py"), default_timeout=30).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["sample_id"]) == sorted(ids)
    assert sorted(table["action"]) == ["drop", "drop", "relabel"]
    assert len(at.get("download_button")) == 2
    at.number_input(key="export-topk").set_value(5).run()
    assert len(at.dataframe[0].value) >= 5
