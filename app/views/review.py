"""Check labels: a person confirms or corrects validation (and test) labels, one image at a time,
in an order that surfaces likely errors first; the checked labels become the trusted reference
that the scores, the recommendation and the proof use (engine.trusted)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import state
from app.components.common import class_name, require_run
from engine.review import review_queue
from engine.trusted import forget_trusted, set_trusted, trusted_counts

K = "review"
SPLITS = {"val": "Validation", "test": "Test"}


@st.cache_data(max_entries=16, show_spinner="Ordering the images to check ...")
def _queue(path: str, split: str, version: float, n_checked: int) -> list[str]:
    return review_queue(path, split)


def counts_line(run: Path) -> None:
    c = trusted_counts(run)
    v, t = c["val"], c["test"]
    st.markdown(
        f"**{v['checked']}** validation labels checked ({v['corrected']} corrected), "
        f"**{t['checked']}** test labels ({t['corrected']} corrected)."
    )
    if v["checked"]:
        st.caption(
            "Validation-based scores and the recommendation now use only the checked validation "
            "images, with your labels; the proof uses your test labels where you checked them. "
            "Recompute scores on **Influence** to bring them up to date."
        )
    else:
        st.caption(
            "Validation-loss influence assumes the validation labels are right. If they come from "
            "the same labelling as the training set, a shared mistake is defended by them: check a "
            "few dozen here first. The queue puts the labels the model finds least likely first, "
            "with a random one every fourth place."
        )


def _check(run: Path, sid: str, label: int) -> None:
    set_trusted(run, {sid: label})
    st.session_state.setdefault(f"{K}-history", []).append(sid)


def _undo(run: Path) -> None:
    hist = st.session_state.get(f"{K}-history") or []
    if hist:
        forget_trusted(run, [hist.pop()])


def item_section(run: Path, split: str) -> None:
    names = state.bundle(run).class_names
    skipped = st.session_state.setdefault(f"{K}-skipped-{split}", [])
    n_checked = trusted_counts(run)[split]["checked"]
    queue = [
        s for s in _queue(str(run), split, state.run_version(run), n_checked) if s not in skipped
    ]
    if not queue:
        st.success(f"Every {SPLITS[split].lower()} image is checked (or skipped).")
        return
    sid = queue[0]
    sp = state.bundle(run).split(split)
    given = int(sp.labels[sp.ids.index(sid)])
    pred = state.predictions(run).set_index("sample_id").loc[sid]
    left, right = st.columns([1, 2])
    left.image(state.thumbnail(run, sid, split=split, px=192), caption=sid)
    with right:
        st.markdown(
            f"Given label: **{class_name(names, given)}** · the model says "
            f"**{class_name(names, int(pred['predicted']))}** ({float(pred['confidence']):.0%}). "
            f"{len(queue)} left to check."
        )
        st.button(f"✓ {class_name(names, given)} is right  (Enter)", key=f"{K}-ok", type="primary",
                  shortcut="Enter", on_click=_check, args=(run, sid, given))  # fmt: skip
        st.caption("Or the right class (its number key):")
        cols = st.columns(min(len(names), 5))
        for c, name in enumerate(names):
            key = str(c) if c < 10 else None
            cols[c % len(cols)].button(
                f"{name}" + (f"  ({key})" if key else ""), key=f"{K}-as-{c}", shortcut=key,
                on_click=_check, args=(run, sid, c), disabled=c == given,
            )  # fmt: skip
        a, b = st.columns(2)
        a.button("Skip  (S)", key=f"{K}-skip", shortcut="S",
                 on_click=lambda: skipped.append(sid))  # fmt: skip
        b.button("Undo last  (Backspace)", key=f"{K}-undo", shortcut="Backspace",
                 on_click=_undo, args=(run,), disabled=not st.session_state.get(f"{K}-history"))  # fmt: skip


def main() -> None:
    st.title("Check labels")
    st.markdown(
        "Confirm or correct the labels of some validation and test images. Your labels become "
        "the trusted reference: validation-based scores, the recommendation and the proof use them."
    )
    run = require_run()
    if run is None:
        return
    counts_line(run)
    split = st.radio(
        "Split", list(SPLITS), format_func=SPLITS.get, horizontal=True, key=f"{K}-split"
    )
    item_section(run, str(split))


main()
