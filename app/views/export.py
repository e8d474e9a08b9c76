"""Export: the ticked samples as CSV, and a cleaned label file in the input's own format."""

from __future__ import annotations

import streamlit as st

from app import state
from app.components.common import require_run
from app.components.recommendation import latest, pick_method, trust_note, why_caption
from engine.export import cleaned_labels, export_selection
from engine.selections import clear_selections, load_selections

st.title("Export")
run = require_run()
if run is None:
    st.stop()
sel = load_selections(run)
methods = state.score_methods(run)
rec = latest(run)
method = pick_method("Score column from", methods, rec, key="export-method") if methods else None
why_caption(rec, method)
if method:
    trust_note(run, method)
top_k = int(
    st.number_input(
        "Also include the top-k most harmful images of this method (flagged, not ticked)",
        0, 100_000, 0, key="export-topk", disabled=not methods,
    )
)  # fmt: skip
if not sel.ids and top_k == 0:
    st.info(
        "Nothing ticked yet: tick **drop** or choose a relabel on the **Harmful images** page "
        "(or any page with image tiles), or include the top-k flagged images above."
    )
else:
    table = export_selection(run, method=method, predictions=state.predictions(run), top_k=top_k)
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button(
        f"Download {len(table)} rows as CSV", table.to_csv(index=False).encode("utf-8"),
        file_name=f"{run.name}-selection.csv", mime="text/csv", key="export-csv",
    )  # fmt: skip
name, data = cleaned_labels(run)
st.subheader("Cleaned label file")
st.caption(
    f"The labels of `{run.name}` in the input's own format, without the {len(sel.drop)} dropped "
    f"image(s) and with {len(sel.relabel)} relabel(s) applied."
)
st.download_button(
    f"Download {name}", data, file_name=name, mime="text/csv", key="export-labels",
)  # fmt: skip
if sel.ids and st.button("Clear every tick and relabel of this run", key="export-clear"):
    clear_selections(run)
    st.rerun()
