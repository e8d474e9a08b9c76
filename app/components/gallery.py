"""A paginated grid of small thumbnails with a "drop" tick box and a relabel choice per tile.

Ticks and relabels are written to the run directory (engine.selections) the moment they change,
so a browser refresh, a second tab or a server restart keeps them. Only one page of thumbnails
(small PNGs, cached) is sent at a time, so memory stays flat while paging through 60,000 images.

The tiles' widget states are set from the run directory only when it changed other than through
this gallery's own boxes, or when a tile is new: a rerun that read the file just before a click
was saved (a finishing job reruns the page) must not push the old value back into a box the user
has just ticked.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import streamlit as st

from app import state
from engine.selections import Selections, load_selections, set_drop, set_relabel

_KEEP = "keep label"


def _signature(sel: Selections) -> str:
    return json.dumps([sorted(sel.drop), sorted(sel.relabel.items())])


def _synced_key(gallery_key: str) -> str:
    """Session key: the selections the gallery's widgets were last known to show."""
    return f"{gallery_key}-synced"


def _on_drop(run_dir: str, sample_id: str, widget_key: str, gallery_key: str) -> None:
    sel = set_drop(run_dir, [sample_id], bool(st.session_state[widget_key]))
    st.session_state[_synced_key(gallery_key)] = _signature(sel)  # the box already shows it


def _on_relabel(run_dir: str, sample_id: str, widget_key: str, gallery_key: str) -> None:
    v = st.session_state[widget_key]
    sel = set_relabel(run_dir, sample_id, None if v == _KEEP else int(v))
    st.session_state[_synced_key(gallery_key)] = _signature(sel)


def _on_page_drop(run_dir: str, ids: list[str], dropped: bool) -> None:
    set_drop(run_dir, ids, dropped)


def render_gallery(
    run_dir: str | Path,
    ids: list[str],
    *,
    scores: dict[str, float] | None,
    key: str,
    page_size: int = 24,
    show_predicted: bool = True,
    flipped: set[str] | None = None,
    columns: int = 6,
    split: str = "train",
) -> None:
    """Show `ids` (already in the order to show) as pages of `page_size` tiles.

    Each tile: thumbnail, given label, predicted label and confidence (`show_predicted`), the
    score (negative = harmful) when `scores` has it, a mark when the id is in `flipped` (labels
    flipped by injected noise), a "drop" tick box and a relabel select box. `key` prefixes every
    widget key, so one page can hold several galleries. `split` says which split the ids are from
    (tick boxes are shown for training images only).
    """
    run = str(run_dir)
    if not ids:
        st.info("Nothing to show with these filters.")
        return
    n_pages = max(1, math.ceil(len(ids) / page_size))
    page_key = f"{key}-page"
    top = st.columns([2, 3, 2, 2])
    page = int(
        top[0].number_input(
            f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, step=1, key=page_key
        )
    )
    page = min(max(page, 1), n_pages)
    start = (page - 1) * page_size
    shown = ids[start : start + page_size]
    top[1].caption(f"Showing {start + 1}–{start + len(shown)} of {len(ids)}")
    if split == "train":
        top[2].button(
            "Tick all on this page",
            key=f"{key}-tickall",
            on_click=_on_page_drop,
            args=(run, shown, True),
        )
        top[3].button(
            "Untick this page",
            key=f"{key}-untickall",
            on_click=_on_page_drop,
            args=(run, shown, False),
        )

    names = state.bundle(run).class_names
    facts = state.facts(run)
    sel = load_selections(run)
    sig = _signature(sel)
    # changed elsewhere (tick-all buttons, another page or tab): every tile takes the saved state
    resync = st.session_state.get(_synced_key(key)) != sig
    options: list[object] = [_KEEP, *range(len(names))]

    for r in range(0, len(shown), columns):
        cols = st.columns(columns)
        for col, sid in zip(cols, shown[r : r + columns], strict=False):
            with col.container(border=True):
                _tile(
                    run, sid, split, names, facts.get(sid), show_predicted, sel, scores, flipped,
                    options, key, resync,
                )  # fmt: skip
    st.session_state[_synced_key(key)] = sig


def _tile(run, sid, split, names, facts, show_predicted, sel, scores, flipped, options, key, resync) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    url = state.thumbnail_url(run, sid, split=split)
    if url:
        st.image(url, width=state.THUMB_PX)
    given = facts.label if facts is not None else -1
    lines = [f"**{names[given] if given >= 0 else '?'}** given"]
    if show_predicted and facts is not None and facts.predicted >= 0:
        p = facts.predicted
        mark = "" if p == given else " ≠"
        lines.append(f"pred **{names[p]}**{mark} ({facts.confidence:.2f})")
    if scores is not None and sid in scores:
        lines.append(f"score {scores[sid]:+.3g}")
    if flipped is not None and sid in flipped:
        lines.append(":red[⚑ known wrong label]")
    st.markdown("  \n".join(lines))
    st.caption(sid)
    if split != "train":
        return
    dk = f"{key}-drop-{sid}"
    if resync or dk not in st.session_state:  # the run directory is the source of truth
        st.session_state[dk] = sid in sel.drop
    st.checkbox("drop", key=dk, on_change=_on_drop, args=(run, sid, dk, key))
    rk = f"{key}-relabel-{sid}"
    if resync or rk not in st.session_state:
        st.session_state[rk] = sel.relabel.get(sid, _KEEP)
    st.selectbox(
        "relabel",
        options,
        key=rk,
        format_func=lambda o: _KEEP if o == _KEEP else f"relabel → {names[int(o)]}",  # type: ignore[call-overload]
        on_change=_on_relabel,
        args=(run, sid, rk, key),
        label_visibility="collapsed",
    )


def render_two_sided(
    run_dir: str | Path,
    sides: dict[str, list[str]],
    *,
    key: str,
    scores: dict[str, float] | None,
    page_size: int = 24,
    flipped: set[str] | None = None,
    suffixes: tuple[str, ...] = ("harm", "help"),
) -> None:
    """A horizontal choice between galleries (label -> ids, e.g. harmful / helpful) and the one
    chosen. The choice is the radio ``{key}-side`` (its value is the side's position); side i's
    widgets are keyed ``{key}-{suffixes[i]}``.

    A choice, not tabs: st.tabs would build every gallery (their thumbnails and tick boxes) on
    every rerun and send them all to the browser, though only one is visible.
    """
    labels = list(sides)
    if len(suffixes) < len(labels):
        raise ValueError(f"{len(labels)} sides need as many key suffixes, got {suffixes}")
    # the labels carry counts that change with the data: remember the side by position
    pos_key = f"{key}-side"
    pos = st.radio(
        "Show", range(len(labels)), format_func=lambda i: labels[i], key=pos_key,
        horizontal=True, label_visibility="collapsed",
    )  # fmt: skip
    i = int(pos) if pos is not None else 0
    render_gallery(
        run_dir, sides[labels[i]], scores=scores, key=f"{key}-{suffixes[i]}",
        page_size=page_size, flipped=flipped,
    )  # fmt: skip
