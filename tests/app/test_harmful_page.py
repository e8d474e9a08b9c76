"""Harmful images page: the grid renders, a drop tick and a relabel persist to selections.json."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.export import method_scores
from engine.selections import load_selections
from tests.app.conftest import TINY_METHOD, page


def test_no_scores_says_what_to_do(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir / "influence")
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    assert not at.exception
    assert any("No influence scores" in i.value for i in at.info)


def test_grid_shows_most_harmful_first_with_precision(run_dir: Path) -> None:
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    assert not at.exception
    worst = method_scores(run_dir, TINY_METHOD).sort_values(kind="stable").index[0]
    drops = [c for c in at.checkbox if c.key and c.key.startswith("harmful-top-drop-")]
    assert drops[0].key == f"harmful-top-drop-{worst}"
    assert len(drops) == 24  # one page
    labels = [m.label for m in at.metric]
    assert any("Precision of the top-k" in x for x in labels)  # the tiny run has injected noise


def test_only_the_chosen_side_is_built_and_helpful_shows_the_most_helpful_first(
    run_dir: Path,
) -> None:
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    assert not any(c.key and c.key.startswith("harmful-help-") for c in at.checkbox)
    at.radio(key="harmful-side").set_value(1).run()  # the second side: "Most helpful"
    assert not at.exception
    best = method_scores(run_dir, TINY_METHOD).sort_values(kind="stable").index[-1]
    drops = [c.key for c in at.checkbox if c.key and c.key.startswith("harmful-help-drop-")]
    assert drops[0] == f"harmful-help-drop-{best}" and len(drops) == 24
    assert not any(c.key and c.key.startswith("harmful-top-") for c in at.checkbox)


def test_ticking_drop_and_relabel_persist_and_survive_a_new_session(run_dir: Path) -> None:
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    drops = [c for c in at.checkbox if c.key and c.key.startswith("harmful-top-drop-")]
    sid = drops[1].key.removeprefix("harmful-top-drop-")
    drops[1].check().run()
    assert not at.exception
    assert json.loads((run_dir / "selections.json").read_text())["drop"] == [sid]
    other = drops[2].key.removeprefix("harmful-top-drop-")
    at.selectbox(key=f"harmful-top-relabel-{other}").set_value(0).run()
    assert load_selections(run_dir).relabel == {other: 0}
    fresh = AppTest.from_file(
        page("harmful.py"), default_timeout=30
    ).run()  # like a browser refresh
    assert fresh.checkbox(key=f"harmful-top-drop-{sid}").value is True
    assert fresh.selectbox(key=f"harmful-top-relabel-{other}").value == 0
    fresh.checkbox(key=f"harmful-top-drop-{sid}").uncheck().run()
    assert load_selections(run_dir).drop == set()


def test_a_tick_is_not_undone_by_a_rerun_that_read_the_file_before_it_was_saved(
    run_dir: Path,
) -> None:
    from engine.selections import set_drop

    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    drops = [c.key for c in at.checkbox if c.key and c.key.startswith("harmful-top-drop-")]
    a, b = (k.removeprefix("harmful-top-drop-") for k in drops[:2])
    at.checkbox(key=drops[0]).check().run()
    assert load_selections(run_dir).drop == {a}
    # A rerun started by a finished job read selections.json before the click on b was saved:
    # the box of b already holds the user's tick, the file does not. The stale rerun must leave
    # the box alone; before, it pushed "unticked" back and the next event unticked b for real.
    at.session_state[drops[1]] = True
    at.run()
    assert at.checkbox(key=drops[1]).value is True
    assert at.checkbox(key=drops[0]).value is True
    # a change made elsewhere (another tab, a tick-all button) still reaches every box
    set_drop(run_dir, [a], False)
    at.run()
    assert at.checkbox(key=drops[0]).value is False


def test_disagreement_filter_keeps_only_mispredicted(run_dir: Path) -> None:
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    at.checkbox(key="harmful-disagree").check().run()
    assert not at.exception
    from engine.export import run_predictions

    p = run_predictions(run_dir).set_index("sample_id")
    import pandas as pd

    man = pd.read_csv(run_dir / "manifest.csv", dtype={"sample_id": str}).set_index("sample_id")
    shown = [
        c.key.removeprefix("harmful-top-drop-")
        for c in at.checkbox
        if c.key and c.key.startswith("harmful-top-drop-")
    ]
    assert shown, "the tiny noisy run has mispredicted training images: the filter shows some"
    assert all(p.at[i, "predicted"] != man.at[i, "label"] for i in shown)
