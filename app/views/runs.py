"""Runs & training: the first screen. One button trains the demo model and finds harmful images;
a form trains any model on any source; a table lists the runs; curves show the current run."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.components.common import show_user_error
from app.components.executor import executor_form
from app.components.forms import option_input, option_value
from app.components.progress import active_jobs, last_failure
from engine import jobs
from engine.config import TrainConfig
from engine.data import DataSpec
from engine.influence.scorestore import ScoreStore
from engine.workspace import new_run_name

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "digits"
# The fixed split: label errors in training only, clean validation / test (sample_data/digits/README.md).
SAMPLE_DATASET = f"csv:{SAMPLE / 'splits.csv'}"
# After training: every candidate method that is cheap at the run's size, then the measured
# recommendation of which one's suggestions help (engine.recommend.score_and_recommend).
# after training: the scores and the recommendation, then the class heatmap's scores (hydra on
# the per-test-class query, about a second at demo size), so no page is empty after the button
HEATMAP_JOB = {"kind": "influence", "params": {"method": "hydra", "query": "class"}}
THEN = [{"kind": "score-and-recommend", "params": {"then": [HEATMAP_JOB]}}]

SOURCES = {
    "Bundled sample (digits with mislabeled images)": "sample",
    "scikit-learn digits (8x8)": "digits",
    "Fashion-MNIST": "fashion-mnist",
    "MNIST": "mnist",
    "CIFAR-10": "cifar10",
    "ImageFolder path": "imagefolder",
    "Upload a zip of an ImageFolder": "zip",
    "CSV file (path,label[,split])": "csv",
}
# Sensible defaults per source: small enough to train in seconds to a few minutes on a laptop CPU.
DEFAULTS: dict[str, dict[str, Any]] = {
    "sample": dict(model="mlp", epochs=10, batch_size=32, lr=0.05, n_train=0, image_size="8x8"),
    "digits": dict(model="mlp", epochs=10, batch_size=32, lr=0.05, n_train=0, image_size=""),
    "fashion-mnist": dict(
        model="lenet5", epochs=5, batch_size=64, lr=0.05, n_train=5000, image_size=""
    ),
    "mnist": dict(model="lenet5", epochs=5, batch_size=64, lr=0.05, n_train=5000, image_size=""),
    "cifar10": dict(
        model="cifar-cnn", epochs=10, batch_size=64, lr=0.02, n_train=5000, image_size=""
    ),
    "imagefolder": dict(
        model="lenet5", epochs=10, batch_size=32, lr=0.05, n_train=0, image_size="32x32"
    ),
    "zip": dict(model="lenet5", epochs=10, batch_size=32, lr=0.05, n_train=0, image_size="32x32"),
    "csv": dict(model="lenet5", epochs=10, batch_size=32, lr=0.05, n_train=0, image_size="32x32"),
}


def demo_spec() -> tuple[dict[str, Any], dict[str, Any]]:
    """The demo: an MLP on the bundled sample (engine.sample_data.demo_spec)."""
    from engine.sample_data import demo_spec as spec

    return spec(SAMPLE)


def start_training(data: dict[str, Any], train: dict[str, Any], *, then_influence: bool) -> None:
    from engine.config import ConfigError, TrainConfig
    from engine.data import DataSpec

    cfg = TrainConfig.from_dict(train)
    cfg.validate()  # fail in the page, with the message, not in the job
    if cfg.backbone:
        from engine.backbone import check_backbone

        check_backbone(cfg.backbone, cfg.backbone_weights)
    spec = DataSpec.from_dict(data)
    if not 0 <= spec.noise < 1:
        raise ConfigError(f"label noise must be in [0, 1), got {spec.noise}")
    if spec.backdoor:
        from engine.data.backdoor import Backdoor

        Backdoor.parse(spec.backdoor)
    run = state.workspace() / new_run_name(spec.dataset, str(train.get("model")))
    then = THEN if then_influence else []
    jobs.start_job("train", run_dir=run, params={"data": data, "train": train, "then": then})
    state.set_current_run(run)


def intro() -> None:
    st.title("Retracer")
    st.markdown(
        "Retracer trains an image classifier while recording every SGD step, then replays that "
        "record to estimate how much each training image helped or hurt the model. It shows you the "
        "most harmful images (often mislabeled ones), and proves the finding by retraining without them."
    )
    if st.button("Train the demo model and find harmful images", type="primary", key="runs-demo"):
        data, train = demo_spec()
        try:
            start_training(data, train, then_influence=True)
        except Exception as e:
            if not show_user_error(e):
                raise
        else:
            st.rerun()
    src = (
        "the bundled sample (`sample_data/digits`, 15% of its training images mislabeled)"
        if SAMPLE.is_dir()
        else "scikit-learn's digits with 15% of labels pair-flipped (the bundled sample is missing)"
    )
    st.caption(
        f"The demo trains a small MLP on {src}, scores every image with several methods, and "
        "measures which method's suggestions really help (by retraining without them)."
    )


def finding_sentence(rec: dict[str, Any]) -> str:
    """What the demo chain found, in words a newcomer follows ("100 suggested images, 9 in 10...")."""
    k, m = int(rec["k"]), rec.get("method")
    if not m:
        return str(rec.get("why", ""))
    row = next(r for r in rec["table"] if r["method"] == m and int(r.get("k", k)) == k)
    text = f"**{k} suggested images** (the top {k} of `{m}`)"
    prec = row.get("precision")
    if isinstance(prec, float) and rec.get("n_known_errors"):
        text += f": {round(prec * k)} of them ({prec:.0%}) are known label errors"
    text += (
        f". Removing them lowered the validation loss by {-row['d_val_loss']:.3f} on images the "
        f"scores never saw (accuracy {row['d_val_acc'] * 100:+.1f} points), where {k} random images "
        f"changed it by {rec['random']['d_val_loss']:+.3f}."
        if row["d_val_loss"] < 0
        else f". {rec.get('why', '')}"
    )
    return text


def finding_section(run: Path | None) -> None:
    """After the chain: one sentence of what was found, and the next step (look -> tick -> prove)."""
    # active_jobs_exist, not active_jobs: progress_section already shows the job's progress (and
    # its Cancel button; a second one had the same key and broke the page)
    if run is None or not state.run_ready(run) or active_jobs_exist(run):
        return
    from app.components.recommendation import latest

    rec = latest(run)
    if rec is None:
        return
    st.success(finding_sentence(rec))
    if rec.get("method"):
        st.markdown(
            "**Next:** look at them on **Harmful images** and press *Tick the recommended "
            f"{len(rec['drop'])}*, then prove it on **Retrain & compare** (fresh seeds, random "
            "control)."
        )


def progress_section(run: Path | None) -> None:
    if run is None:
        return
    act = active_jobs(run)
    if act and ScoreStore(run).metrics():
        curves(run)


def curves(run: Path) -> None:
    rows = ScoreStore(run).metrics()
    if not rows:
        return
    m = pd.DataFrame(rows)
    c1, c2 = st.columns(2)
    for col, what, title in ((c1, "loss", "Loss"), (c2, "acc", "Accuracy")):
        fig = go.Figure()
        for s in ("train", "val", "test"):
            if f"{s}_{what}" in m:
                fig.add_scatter(x=m["epoch"], y=m[f"{s}_{what}"], mode="lines+markers", name=s)
        if what == "acc" and "attack_success" in m:  # a backdoored run: test-2 sent to b
            fig.add_scatter(
                x=m["epoch"], y=m["attack_success"], mode="lines+markers", name="attack success"
            )
        fig.update_layout(
            title=title, xaxis_title="epoch", height=300, margin=dict(l=10, r=10, t=40, b=10)
        )
        col.plotly_chart(fig, key=f"runs-curve-{what}")


def _save_upload(up: Any) -> Path:
    data = up.getvalue()
    folder = state.workspace() / ".uploads"
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-{Path(up.name).name}"
    if not p.exists():  # atomic: a server killed mid-write must not leave a half zip to reuse
        from engine.runs import atomic_write_bytes

        atomic_write_bytes(p, data)
    return p


def train_form() -> None:
    with st.expander("Train a new model", expanded=state.current_run() is None):
        label = st.selectbox("Data source", list(SOURCES), key="runs-source")
        src = SOURCES[label]
        d = DEFAULTS[src]
        k = f"runs-{src}"
        dataset, upload = src, None
        if src == "sample":
            dataset = SAMPLE_DATASET if SAMPLE.is_dir() else "digits"
            if not SAMPLE.is_dir():
                st.caption(
                    "The bundled sample is missing; this trains on scikit-learn digits instead."
                )
        elif src in ("imagefolder", "csv"):
            hint = (
                "folder with one sub-folder per class"
                if src == "imagefolder"
                else "CSV with columns path,label[,split]"
            )
            path = st.text_input(f"Path ({hint})", key=f"{k}-path")
            dataset = f"{src}:{path.strip()}"
        elif src == "zip":
            upload = st.file_uploader("Zip of an ImageFolder", type=["zip"], key="runs-zip")
        c = st.columns(4)
        classes = option_input(c[0], DataSpec, "classes", key=f"{k}-classes")
        n_train = option_input(c[1], DataSpec, "n_train", key=f"{k}-ntrain", value=d["n_train"])
        noise = option_input(c[2], DataSpec, "noise", key=f"{k}-noise")
        size = option_input(c[3], DataSpec, "image_size", key=f"{k}-size", value=d["image_size"])
        c = st.columns(4)
        model = option_input(c[0], TrainConfig, "model", key=f"{k}-model", value=d["model"])
        widths = option_input(
            c[1], TrainConfig, "widths", key=f"{k}-widths", value="64", disabled=model != "mlp"
        )
        epochs = option_input(c[2], TrainConfig, "epochs", key=f"{k}-epochs", value=d["epochs"])
        batch = option_input(
            c[3], TrainConfig, "batch_size", key=f"{k}-batch", value=d["batch_size"]
        )
        c = st.columns(4)
        lr = option_input(c[0], TrainConfig, "lr", key=f"{k}-lr", value=d["lr"])
        momentum = option_input(c[1], TrainConfig, "momentum", key=f"{k}-mom")
        wd = option_input(c[2], TrainConfig, "weight_decay", key=f"{k}-wd")
        seed = option_input(c[3], TrainConfig, "seed", key=f"{k}-seed")
        c = st.columns(4)
        backdoor = option_input(c[0], DataSpec, "backdoor", key=f"{k}-backdoor")
        trigger = option_input(c[1], DataSpec, "trigger", key=f"{k}-trigger")
        bd_rate = option_input(c[2], DataSpec, "backdoor_rate", key=f"{k}-bdrate")
        optimizer = option_input(c[3], TrainConfig, "optimizer", key=f"{k}-optimizer")
        c = st.columns([2, 2, 1, 1])
        backbone = option_input(c[0], TrainConfig, "backbone", key=f"{k}-backbone")
        bb_weights = option_input(c[1], TrainConfig, "backbone_weights", key=f"{k}-bbweights")
        bb_size = option_input(c[2], TrainConfig, "backbone_size", key=f"{k}-bbsize")
        base_width = option_input(
            c[3], TrainConfig, "base_width", key=f"{k}-basewidth", disabled="resnet" not in model
        )
        c = st.columns(2)
        standardize = option_input(c[0], TrainConfig, "standardize", key=f"{k}-standardize")
        also = c[1].checkbox(
            "Then score every image and recommend a method",
            True,
            key="runs-then",
            help="The methods that are cheap at this size, then a measurement of which one's top "
            "images help when removed (counterfactual retrains, validation images only).",
        )
        if st.button("Train", type="primary", key="runs-train"):
            try:
                if src == "zip":
                    if upload is None:
                        from engine.data import DataError

                        raise DataError("choose a zip file of an ImageFolder first")
                    dataset = f"imagefolder:{_save_upload(upload)}"
                data = {
                    "dataset": dataset, "classes": option_value(DataSpec, "classes", classes),
                    "n_train": int(n_train) or None, "noise": float(noise), "seed": int(seed),
                    "image_size": option_value(DataSpec, "image_size", size),
                }  # fmt: skip
                if backdoor.strip():
                    data.update(
                        backdoor=backdoor.strip(), trigger=trigger, backdoor_rate=float(bd_rate)
                    )
                if src == "sample" and SAMPLE.is_dir() is False:
                    data["noise"] = data["noise"] or 0.08
                train = {
                    "model": model, "widths": option_value(TrainConfig, "widths", widths) or [64],
                    "epochs": int(epochs),
                    "batch_size": int(batch), "lr": float(lr), "momentum": float(momentum),
                    "weight_decay": float(wd), "seed": int(seed), "optimizer": optimizer,
                    "standardize": bool(standardize), "base_width": int(base_width),
                }  # fmt: skip
                if str(backbone).strip():
                    train.update(
                        backbone=str(backbone).strip(), backbone_weights=str(bb_weights).strip(),
                        backbone_size=int(bb_size),
                    )  # fmt: skip
                if optimizer != "sgd":
                    train["beta1"] = float(momentum) or 0.9
                _check_source(data)
                start_training(data, train, then_influence=also)
            except Exception as e:
                if not show_user_error(e):
                    raise
            else:
                st.rerun()


def _check_source(data: dict[str, Any]) -> None:
    """Refuse obviously bad paths in the page (the job would fail with the same message)."""
    from engine.data import DataError

    kind, _, arg = str(data["dataset"]).partition(":")
    if kind in ("imagefolder", "csv"):
        if not arg:
            raise DataError(
                f"enter the path of the {'folder' if kind == 'imagefolder' else 'CSV file'}"
            )
        p = Path(arg).expanduser()
        if not p.exists():
            raise DataError(f"{p} does not exist")
        if kind == "imagefolder" and p.is_file() and p.suffix.lower() != ".zip":
            raise DataError(
                f"{p} is a file; an ImageFolder is a folder with one sub-folder per class"
            )
        if kind == "csv" and not p.is_file():
            raise DataError(f"{p} is not a file")


def runs_section(run: Path | None) -> None:
    df = state.runs_table()
    if df.empty:
        st.info("No runs yet: press the button above, or train a model with the form.")
        return
    st.subheader("Runs")
    view = df[["name", "dataset", "model", "state", "val_acc", "test_acc"]].copy()
    view["created"] = pd.to_datetime(df["created"], unit="s").dt.strftime("%Y-%m-%d %H:%M")
    st.dataframe(view, hide_index=True, width="stretch")
    if run is not None and ScoreStore(run).metrics() and not active_jobs_exist(run):
        st.subheader(f"Training curves of `{run.name}`")
        curves(run)
        skipped_section(run)


def skipped_section(run: Path) -> None:
    """The files data preparation could not use, so a user sees why the counts are lower."""
    from engine.verify import skipped_files

    skipped = skipped_files(run)
    if not skipped:
        return
    st.warning(
        f"{len(skipped)} file(s) or class folder(s) of the source were skipped and are not in "
        "this run (unreadable, not an image, or empty). The list is also in `skipped.json`."
    )
    with st.expander(f"Skipped ({len(skipped)})"):
        st.dataframe(pd.DataFrame({"file: reason": skipped}), hide_index=True, width="stretch")


def active_jobs_exist(run: Path) -> bool:
    return jobs.active_job(run) is not None


run = state.current_run()
intro()
progress_section(run)
finding_section(run)
last_failure(run)
train_form()
executor_form()
runs_section(run)
