"""Retrain & compare: retrain without the ticked images (and with the relabels), against the run
itself and a random control of the same size, and say in one sentence whether it helped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app import state
from app.components.common import require_run
from app.components.experiment import history_table, render_experiment
from app.components.gallery import render_gallery
from app.components.progress import active_jobs, last_failure
from engine import jobs
from engine.selections import clear_selections, load_selections

K = "retrain"
MODES = {
    "all": "Retrain all epochs: same start, same batches, the ticked images left out (exact, one run)",
    "last": "Retrain the last epoch only: fast, from the checkpoint before it",
    "fresh": "Fresh seeds: new initial weights and batch order, several seeds (slower, error bars)",
}


def experiments(run: Path) -> list[dict[str, Any]]:
    from engine.retrain import list_experiments

    return [r for r in list_experiments(run) if r.get("kind", "retrain") == "retrain"]


def changes_section(run: Path) -> tuple[int, int]:
    sel = load_selections(run)
    st.subheader("1. What to change")
    if not sel.ids:
        st.info(
            "Nothing is ticked yet. Tick images to drop (or choose a new label) on **Harmful images**, "
            "**Class heatmap**, **Test sample** or **Embedding map**, then come back here."
        )
        return 0, 0
    names = state.bundle(run).class_names
    st.markdown(
        f"**{len(sel.drop)}** images ticked to drop, **{len(sel.relabel)}** relabelled. "
        "Untick a tile to remove it from the set."
    )
    if sel.relabel:
        st.caption(
            "Relabels: "
            + ", ".join(f"`{i}` → {names[c]}" for i, c in sorted(sel.relabel.items())[:20])
            + (" ..." if len(sel.relabel) > 20 else "")
        )
    prediction_line(run, sorted(sel.drop), len(sel.relabel))
    ids = sorted(sel.ids)
    methods = state.score_methods(run)
    scores = state.scores(run, methods[0]).to_dict() if methods else None
    render_gallery(run, ids, scores=scores, key=f"{K}-set", page_size=12)
    if st.button("Clear all ticks and relabels", key=f"{K}-clear"):
        clear_selections(run)
        st.rerun()
    return len(sel.drop), len(sel.relabel)


def prediction_line(run: Path, drop: list[str], n_relabel: int) -> None:
    """Before retraining: what the exact scores predict for the ticked removals."""
    from engine.prediction import PREDICTOR, predicted_change

    if not drop:
        return
    v = predicted_change(run, drop)
    if v != v:  # NaN: the exact scores are not stored
        st.caption(
            f"Compute `{PREDICTOR}` on **Influence** to see the predicted change of the validation "
            "loss before you retrain."
        )
        return
    extra = " (relabels are not part of the prediction)" if n_relabel else ""
    st.markdown(
        f"**Predicted:** removing these {len(drop)} images changes the validation loss by "
        f"**{v:+.4f}**{extra} — the sum of their `{PREDICTOR}` scores, a first-order estimate "
        "that holds best for small sets. The retrain below measures it."
    )


def predictions_section(run: Path) -> None:
    """Every retrain's predicted against measured change of validation loss, and their agreement."""
    from engine.prediction import prediction_agreement, prediction_pairs

    pairs = prediction_pairs(run)
    if pairs.empty:
        return
    a = prediction_agreement(pairs)
    st.subheader("How far the predictions held on this model")
    corr = (
        f", Spearman {a['spearman']:.2f}, Pearson {a['pearson']:.2f}"
        if a["spearman"] == a["spearman"]
        else ""
    )
    st.caption(
        f"{a['n']} experiment(s): the predicted and measured change of validation loss agree in "
        f"sign in {a['sign_agreement']:.0%} of them{corr}."
    )
    st.dataframe(pairs.round(4), hide_index=True, width="stretch", key=f"{K}-pairs")


def settings_section(run: Path, n_drop: int, n_relabel: int, busy: bool) -> None:
    st.subheader("2. How to retrain")
    mode = st.radio("Mode", list(MODES), format_func=lambda m: MODES[m], key=f"{K}-mode")
    c1, c2, c3 = st.columns(3)
    # paired seeds: 10 give a proof power at demo size in seconds; big runs start with 3
    n_train = len(state.bundle(run).train)
    seeds = int(
        c1.number_input(
            "Seeds",
            min_value=1,
            max_value=30,
            value=10 if n_train <= 5000 else 3,
            step=1,
            key=f"{K}-seeds",
            disabled=mode != "fresh",
            help="Fresh mode only: each seed trains the original and the cleaned data once.",
        )
    )
    control = c2.checkbox(
        "Random control",
        value=True,
        key=f"{K}-control",
        help="Also remove the same number of randomly chosen images, to tell a real effect from "
        "the effect of removing any images.",
    )
    draws = int(
        c3.number_input(
            "Control draws",
            min_value=1,
            max_value=10,
            value=3,
            step=1,
            key=f"{K}-draws",
            disabled=not control or mode == "fresh",
            help="All / last modes: how many random sets to retrain without (fresh mode uses one per seed).",
        )
    )
    if st.button(
        "Retrain and compare",
        type="primary",
        key=f"{K}-start",
        disabled=busy or not (n_drop or n_relabel),
    ):
        params: dict[str, Any] = {
            "mode": mode,
            "seeds": seeds if mode == "fresh" else 1,
            "control": "random" if control else None,
            "control_draws": draws,
        }
        jobs.start_job("retrain", run_dir=run, params=params)
        st.rerun()


def results_section(run: Path) -> None:
    exps = experiments(run)
    st.subheader("3. Result")
    if not exps:
        st.info(
            "No retraining yet on this run: tick some images and press **Retrain and compare**."
        )
        return
    ids = [str(r["id"]) for r in exps]
    pick = (
        st.selectbox("Experiment", ids, key=f"{K}-pick", help="Newest first.")
        if len(ids) > 1
        else ids[0]
    )
    chosen = exps[ids.index(pick)]
    render_experiment(chosen, key=f"{K}-result")
    pred = (chosen.get("predicted") or {}).get("val_loss_change")
    if pred is not None and chosen.get("measured_val_loss_change") is not None:
        st.markdown(
            f"Validation loss: **predicted {pred:+.4f}**, **measured "
            f"{chosen['measured_val_loss_change']:+.4f}** (after − before)."
        )
    attack_section(exps[ids.index(pick)])
    if len(exps) > 0:
        st.subheader("History of this run")
        st.dataframe(history_table(exps).round(2), hide_index=True, width="stretch")
    predictions_section(run)


def attack_summary(result: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """{group: {"test_acc", "attack_success"}} (means) for a backdoored run's retrain, else None."""
    out = {}
    for g in ("before", "after", "control_runs"):
        summ = (result.get(g) or {}).get("summary") or {}
        if "attack_success" in summ:
            out[g] = {
                "test_acc": float(summ["test_acc"]["mean"]),
                "attack_success": float(summ["attack_success"]["mean"]),
            }
    return out if "before" in out and "after" in out else None


def attack_section(result: dict[str, Any]) -> None:
    """Backdoored runs: attack success (watermarked test images sent to the target class) before
    and after, next to clean test accuracy."""
    a = attack_summary(result)
    if a is None:
        return
    st.markdown("**Backdoor** — attack success on the watermarked test images (test-2)")
    c = st.columns(4)
    b, f = a["before"], a["after"]
    c[0].metric("Attack success before", f"{100 * b['attack_success']:.1f}%")
    c[1].metric(
        "Attack success after",
        f"{100 * f['attack_success']:.1f}%",
        delta=f"{100 * (f['attack_success'] - b['attack_success']):+.1f} pts",
        delta_color="inverse",
    )
    c[2].metric("Clean test accuracy before", f"{100 * b['test_acc']:.1f}%")
    c[3].metric(
        "Clean test accuracy after",
        f"{100 * f['test_acc']:.1f}%",
        delta=f"{100 * (f['test_acc'] - b['test_acc']):+.1f} pts",
    )
    if "control_runs" in a:
        st.caption(
            f"Random control: attack success {100 * a['control_runs']['attack_success']:.1f}%, "
            f"clean test accuracy {100 * a['control_runs']['test_acc']:.1f}%."
        )


def main() -> None:
    st.title("Retrain & compare")
    st.markdown(
        "The proof: retrain without the images you ticked and compare test accuracy with the "
        "original model and with a **random control** (the same number of random images removed)."
    )
    run = require_run()
    if run is None:
        return
    n_drop, n_relabel = changes_section(run)
    busy = bool(active_jobs(run, kinds=("retrain",)))
    last_failure(run, kind="retrain", what="retraining")
    settings_section(run, n_drop, n_relabel, busy)
    results_section(run)


main()
