"""The measured recommendation on every page that picks a method: the default choice, why in one
line, and a mark on methods whose measured removal hurt (engine.recommend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

__all__ = [
    "default_index",
    "pick_method",
    "hurting",
    "latest",
    "method_label",
    "render_table",
    "rows_at_k",
    "trust_note",
    "why_caption",
    "why_line",
]


def latest(run: Path) -> dict[str, Any] | None:
    """The run's newest recommendation that is still current (its score sets unchanged)."""
    from engine.recommend import latest_recommendation

    return latest_recommendation(run)


def rows_at_k(rec: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The table rows measured at the recommended k (one per method)."""
    if not rec:
        return []
    return [r for r in rec.get("table", []) if int(r.get("k", rec["k"])) == int(rec["k"])]


def hurting(rec: dict[str, Any] | None) -> set[str]:
    """Methods whose top-k removal (at the recommended k) made things worse on held-out images."""
    return {str(r["method"]) for r in rows_at_k(rec) if r.get("hurts")}


def method_label(rec: dict[str, Any] | None):  # type: ignore[no-untyped-def]
    """A selectbox format_func: '★ recommended' / '⚠ removal hurt' after a method's name."""
    best, bad = (rec or {}).get("method"), hurting(rec)

    def fmt(m: str) -> str:
        if m == best:
            return f"{m}  ★ recommended"
        return f"{m}  ⚠ its removal hurt" if m in bad else m

    return fmt


def default_index(methods: list[str], rec: dict[str, Any] | None, fallback: list[str]) -> int:
    """Index of the recommended method in `methods`, else of the first fallback present, else 0."""
    for m in [(rec or {}).get("method"), *fallback]:
        if m in methods:
            return methods.index(str(m))
    return 0


def pick_method(
    label: str,
    methods: list[str],
    rec: dict[str, Any] | None,
    *,
    key: str,
    fallback: list[str] | None = None,
    where: Any = None,
    help: str | None = None,
) -> str:
    """A method selectbox that opens on the recommended method and marks ★ / ⚠ (in `where`, a
    container, or the page)."""
    box = (where or st).selectbox(
        label, methods, index=default_index(methods, rec, fallback or []), key=key,
        format_func=method_label(rec), help=help,
    )  # fmt: skip
    return str(box)


def why_caption(rec: dict[str, Any] | None, method: str | None) -> None:
    """A short line under a secondary method picker: why the recommended method is the default."""
    if rec is not None and method is not None and method == rec.get("method"):
        st.caption(f"★ {rec.get('why', '')}")


def why_line(rec: dict[str, Any] | None, method: str) -> None:
    """One line under the method picker: why it is recommended, or that its removal hurt."""
    if rec is None:
        st.caption(
            "No measured recommendation for this run yet: **Influence → Recommend** measures which "
            "method's suggestions help."
        )
        return
    row = next((r for r in rows_at_k(rec) if r.get("method") == method), None)
    if method == rec.get("method"):
        st.success(f"★ Recommended by measurement. {rec.get('why', '')}", icon=None)
    elif row is not None and row.get("hurts"):
        st.warning(
            f"⚠ Removing {method}'s top {rec['k']} made the model worse on validation images its "
            f"scores never saw (validation loss {row['d_val_loss']:+.3f}, accuracy "
            f"{row['d_val_acc'] * 100:+.1f} points): its top images are not the ones to drop."
        )
    elif rec.get("method") is None:
        st.info(rec.get("why", ""))


def render_table(rec: dict[str, Any], *, key: str) -> None:
    """The measured table: each method's change of validation loss / accuracy on held-out images,
    against random removal, with the recommended method first and hurting ones marked."""
    import pandas as pd

    from engine.recommend import table_frame

    t = table_frame(rec)
    view = pd.DataFrame(
        {
            "method": [method_label(rec)(m) if m != "random (mean)" else m for m in t["method"]],
            "k": t["k"],
            "Δ val loss": t["d_val_loss"].round(4),
            "Δ val accuracy (points)": (t["d_val_acc"] * 100).round(1),
            "vs random: loss": t["vs_random_loss"].round(4),
            "vs random: accuracy": (t["vs_random_acc"] * 100).round(1),
            "loss and accuracy disagree": t.get("disagree"),
        }
    )
    if "precision" in t:
        view["known errors in its top k"] = t["precision"].round(2)
    view["seconds"] = t["seconds"].round(1)
    st.dataframe(view, hide_index=True, width="stretch", key=key)
    n = rec["judged_on"]["n"]
    st.caption(
        f"Each method's top k (k = {', '.join(map(str, rec.get('ks') or [rec['k']]))}) removed "
        "and the model retrained with the same start and batches (each batch's mean over the "
        f"images that stay); changes measured on the {n} validation images, each judged by a "
        "removal whose scores never saw it (methods that read validation are scored on one half "
        "and judged on the other, both ways). Objective: "
        f"{'accuracy' if rec['objective'] == 'acc' else 'loss'}. The test split is not used: it "
        "is kept for the proof on **Retrain & compare**."
    )


def trust_note(run: Path, methods: list[str] | str | None = None) -> None:
    """Say whether validation-based scores rest on labels a person checked (engine.trusted)."""
    from engine.recommend import reads_validation
    from engine.trusted import trusted_counts

    names = [methods] if isinstance(methods, str) else list(methods or [])
    if names and not any(reads_validation(m) for m in names):
        return
    n = trusted_counts(run)["val"]["checked"]
    if n:
        st.caption(f"Validation-based scores rest on {n} validation labels a person checked.")
    else:
        st.caption(
            "Validation-based scores use the validation labels as given: nobody has checked any yet "
            "(**Check labels**). If they share the training set's mistakes, they defend them."
        )
