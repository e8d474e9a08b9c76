"""Retracer's Streamlit app: `streamlit run app/main.py --server.fileWatcherType none`.

st.navigation with one st.Page per file in app/views (PAGES; a missing file is an error).
The sidebar shows the current run (saved in the workspace, so a refresh keeps it) and a picker.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/ on the path, not the root
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import state  # noqa: E402

PAGES = [
    ("runs.py", "Runs & training", ":material/model_training:"),
    ("influence.py", "Influence", ":material/functions:"),
    ("harmful.py", "Harmful images", ":material/report:"),
    ("heatmap.py", "Class heatmap", ":material/grid_on:"),
    ("test_sample.py", "Test sample", ":material/image_search:"),
    ("embedding.py", "Embedding map", ":material/scatter_plot:"),
    ("review.py", "Check labels", ":material/fact_check:"),
    ("retrain.py", "Retrain & compare", ":material/compare_arrows:"),
    ("export.py", "Export", ":material/download:"),
]


def _pages() -> list[st.Page]:
    # Not "pages/": Streamlit would treat that folder as a legacy multipage app on a fresh server.
    folder = Path(__file__).resolve().parent / "views"
    return [
        st.Page(folder / name, title=title, icon=icon, default=i == 0, url_path=name[:-3])
        for i, (name, title, icon) in enumerate(PAGES)
    ]


def _pick_run() -> None:
    st.session_state["_run_pick_changed"] = True
    name = st.session_state.get("sidebar-run")
    if name:
        state.set_current_run(state.workspace() / name)


def sidebar() -> None:
    with st.sidebar:
        st.markdown("### Retracer")
        runs = state.runs_table()
        cur = state.current_run()
        if cur is None:
            st.caption("No run yet: train one on **Runs & training**.")
            return
        names = list(runs["name"])
        if cur.name not in names:
            names.insert(0, cur.name)
        st.session_state["sidebar-run"] = cur.name
        st.selectbox("Current run", names, key="sidebar-run", on_change=_pick_run)
        row = runs[runs["name"] == cur.name]
        if len(row):
            r = row.iloc[0]
            acc = "" if r["test_acc"] != r["test_acc"] else f" · test acc {r['test_acc']:.3f}"
            st.caption(f"{r['dataset']} · {r['model']} · {r['state']}{acc}")


def main() -> None:
    st.set_page_config(page_title="Retracer", page_icon=":material/troubleshoot:", layout="wide")
    nav = st.navigation(_pages())
    sidebar()
    nav.run()


main()
