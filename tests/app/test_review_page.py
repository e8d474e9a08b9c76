"""Check labels page: one image at a time, confirm / correct / skip / undo, saved in the run."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.loading import load_run
from engine.review import review_queue
from engine.trusted import load_trusted
from tests.app.conftest import page


def test_confirm_correct_skip_and_undo(run_dir: Path) -> None:
    queue = review_queue(run_dir, "val")
    val = load_run(run_dir, trusted=False).bundle.val
    given = {sid: int(y) for sid, y in zip(val.ids, val.labels.tolist(), strict=True)}
    at = AppTest.from_file(page("review.py"), default_timeout=30).run()
    assert not at.exception
    assert any("0** validation labels checked" in m.value for m in at.markdown)
    assert any("defended by them" in c.value for c in at.caption)
    at.button(key="review-ok").click().run()
    assert not at.exception
    assert load_trusted(run_dir) == {queue[0]: given[queue[0]]}
    other = next(c for c in range(3) if c != given[queue[1]])
    at.button(key=f"review-as-{other}").click().run()
    assert load_trusted(run_dir) == {queue[0]: given[queue[0]], queue[1]: other}
    assert any("1 corrected" in m.value for m in at.markdown)
    at.button(key="review-skip").click().run()  # queue[2] skipped: queue[3] comes next
    at.button(key="review-ok").click().run()
    assert set(load_trusted(run_dir)) == {queue[0], queue[1], queue[3]}
    at.button(key="review-undo").click().run()
    at.button(key="review-undo").click().run()
    assert load_trusted(run_dir) == {queue[0]: given[queue[0]]}
    at.radio(key="review-split").set_value("test").run()
    assert not at.exception
    at.button(key="review-ok").click().run()
    assert len(load_trusted(run_dir)) == 2
