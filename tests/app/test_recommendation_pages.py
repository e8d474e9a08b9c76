"""The measured recommendation on the pages: the default method with its reason, a one-click tick
of its top k, hurting methods marked; the Retrain page predicts before it proves."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.influence.api import compute_influence
from engine.recommend import recommend
from engine.selections import load_selections
from tests.app.conftest import page


def _recommend(run: Path) -> dict:  # type: ignore[type-arg]
    methods = ["loss", "margin", "sgd-influence", "tracin", "influence-function"]
    for m in methods[:3] + methods[4:]:
        compute_influence(run, m)
    return recommend(run, methods=methods, k=9, control_draws=2)


def test_harmful_page_opens_on_the_recommended_method_and_ticks_its_top_k(run_dir: Path) -> None:
    rec = _recommend(run_dir)
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    assert not at.exception
    box = at.selectbox(key="harmful-method")
    assert rec["method"] is not None  # on this run some method's removal helps
    assert box.value == rec["method"]
    assert box.format_func(rec["method"]).endswith("★ recommended")
    for m in {r["method"] for r in rec["table"] if r["hurts"]}:
        assert "hurt" in box.format_func(m)
    assert any(rec["why"] in s.value for s in at.success)
    assert at.number_input(key="harmful-k").value == 9
    at.button(key="harmful-tick-rec").click().run()
    assert not at.exception
    assert load_selections(run_dir).drop == set(rec["drop"])


def test_a_method_whose_removal_hurt_is_marked_when_picked(run_dir: Path) -> None:
    rec = _recommend(run_dir)
    bad = [r for r in rec["table"] if r["hurts"]]
    assert bad  # on this run some method's removal makes the held-out validation images worse
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    at.selectbox(key="harmful-method").set_value(bad[0]["method"]).run()
    assert not at.exception
    assert any("made the model worse" in w.value for w in at.warning)


def test_embedding_and_export_default_to_the_recommended_method(run_dir: Path) -> None:
    rec = _recommend(run_dir)
    assert rec["method"] is not None
    for name, key in (("export.py", "export-method"), ("embedding.py", "embedding-method")):
        at = AppTest.from_file(page(name), default_timeout=60).run()
        assert not at.exception and at.selectbox(key=key).value == rec["method"]
        assert any(rec["why"] in c.value for c in at.caption), name  # and why, in one line


def test_influence_page_shows_the_measured_table(run_dir: Path) -> None:
    rec = _recommend(run_dir)
    at = AppTest.from_file(page("influence.py"), default_timeout=30).run()
    assert not at.exception
    assert any(rec["why"] in m.value for m in at.markdown)
    frames = [d.value for d in at.dataframe if "Δ val loss" in d.value.columns]
    assert len(frames) == 1 and len(frames[0]) == len(rec["table"]) + 1
    (scores,) = [d.value for d in at.dataframe if "measured removal" in d.value.columns]
    marks = dict(zip(scores["method"], scores["measured removal"], strict=True))
    assert marks[rec["method"]] == "★ recommended"
    assert all(marks[r["method"]] == "⚠ hurt" for r in rec["table"] if r["hurts"])


def test_retrain_page_predicts_then_shows_prediction_against_measurement(run_dir: Path) -> None:
    from engine.retrain import retrain
    from engine.selections import set_drop

    s = compute_influence(run_dir, "sgd-influence").sort_values("score", kind="stable")
    drop = s.sample_id.tolist()[:4]
    set_drop(run_dir, drop, True)
    at = AppTest.from_file(page("retrain.py"), default_timeout=60).run()
    assert not at.exception
    want = f"{float(s.score.iloc[:4].sum()):+.4f}"
    assert any("Predicted:" in m.value and want in m.value for m in at.markdown)
    for k in (4, 8, 12):
        retrain(run_dir, drop=s.sample_id.tolist()[:k], mode="all", control_draws=1)
    at = AppTest.from_file(page("retrain.py"), default_timeout=60).run()
    assert not at.exception
    assert any("predicted" in m.value and "measured" in m.value for m in at.markdown)
    assert any("agree in sign" in c.value for c in at.caption)


def test_without_a_recommendation_the_page_says_how_to_get_one(run_dir: Path) -> None:
    at = AppTest.from_file(page("harmful.py"), default_timeout=30).run()
    assert not at.exception
    assert any("No measured recommendation" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == "harmful-tick-rec"]
