"""The app's view of the world: which run is current, and cached loaders keyed by run + mtime.

Everything persistent lives in the run directory (engine.workspace, engine.selections); this
module only caches what is expensive to read (the data bundle, predictions, scores, thumbnails).
Cache keys include the file's modification time, so a re-trained run or new scores show at once.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

from engine import workspace as ws
from engine.data import DataBundle

THUMB_PX = 64


# -- the current run ------------------------------------------------------------------------
def workspace() -> Path:
    return ws.workspace_path()


def current_run() -> Path | None:
    """The current run (persisted in <workspace>/.current, so a refresh keeps it)."""
    return ws.current_run()


def set_current_run(run_dir: str | Path) -> None:
    ws.set_current_run(run_dir)


def runs_table() -> pd.DataFrame:
    return ws.list_runs()


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def run_version(run_dir: str | Path) -> float:
    """Changes whenever the run is (re)trained: the newest of config.json and status.json."""
    p = Path(run_dir)
    return max(_mtime(p / "config.json"), _mtime(p / "status.json"))


def run_ready(run_dir: str | Path | None) -> bool:
    """True when the run finished training (its final checkpoint exists)."""
    if run_dir is None:
        return False
    p = Path(run_dir)
    if not (p / "config.json").is_file():
        return False
    from engine.runs import RunDir

    return RunDir(p).status.get("state") == "done"


# -- cached loaders ---------------------------------------------------------------------------
@st.cache_resource(max_entries=4, show_spinner=False)
def _bundle(path: str, version: float) -> DataBundle:
    return DataBundle.load(path)


def bundle(run_dir: str | Path) -> DataBundle:
    """The run's images, labels, class names and manifest (cached; never mutate it)."""
    return _bundle(str(run_dir), run_version(run_dir))


@st.cache_data(max_entries=8, show_spinner=False)
def _predictions(path: str, version: float) -> pd.DataFrame:
    from engine.export import run_predictions

    return run_predictions(path)


def predictions(run_dir: str | Path) -> pd.DataFrame:
    """sample_id, split, predicted, confidence, prob_given at the final weights (cached)."""
    return _predictions(str(run_dir), run_version(run_dir))


class Facts(NamedTuple):
    """What a gallery tile shows about one image: given label, and at the final weights the
    predicted class and its probability (predicted is -1 when the run has no prediction for it)."""

    label: int
    predicted: int
    confidence: float


@st.cache_resource(max_entries=4, show_spinner=False)
def _facts(path: str, version: float) -> dict[str, Facts]:
    m = _bundle(path, version).manifest
    p = _predictions(path, version)
    pred = dict(zip(p["sample_id"], zip(p["predicted"], p["confidence"], strict=True), strict=True))
    out = {}
    for sid, label in zip(m["sample_id"].tolist(), m["label"].tolist(), strict=True):
        k, c = pred.get(sid, (-1, float("nan")))
        out[sid] = Facts(int(label), int(k), float(c))
    return out


def facts(run_dir: str | Path) -> dict[str, Facts]:
    """sample_id -> Facts for every image of every split (cached and shared: never mutate it).
    A dict, so a gallery page of 24 tiles looks them up in microseconds instead of indexing two
    70k-row tables on every rerun."""
    return _facts(str(run_dir), run_version(run_dir))


@st.cache_resource(max_entries=4, show_spinner=False)
def _train_table(path: str, version: float) -> pd.DataFrame:
    m = _bundle(path, version).manifest
    t = m[m["split"] == "train"].set_index("sample_id")
    p = _predictions(path, version).set_index("sample_id")
    return t.join(p[["predicted", "confidence", "prob_given"]], how="left")


def train_table(run_dir: str | Path) -> pd.DataFrame:
    """The training samples with their manifest columns and predictions, indexed by sample_id.

    Columns: split, label, true_label, path, flipped, predicted, confidence, prob_given.
    Cached and shared between sessions (0.17 s to build at 51k images): never mutate it.
    """
    return _train_table(str(run_dir), run_version(run_dir))


@st.cache_resource(max_entries=16, show_spinner=False)
def _ranked(path: str, method: str, version: float, score_version: float) -> pd.DataFrame:
    t = _train_table(path, version).join(_scores(path, method, score_version).rename("score"))
    return t.dropna(subset=["score"]).sort_values("score", kind="stable")


def ranked(run_dir: str | Path, method: str) -> pd.DataFrame:
    """train_table joined with `method`'s validation scores as column ``score``, most harmful
    (most negative) first; samples without a score left out. Cached and shared: never mutate it."""
    from engine.influence.scorestore import ScoreStore

    v = ScoreStore(run_dir).version(method)
    return _ranked(str(run_dir), method, run_version(run_dir), v)


@st.cache_resource(max_entries=16, show_spinner=False)
def _ranked_ids(
    path: str, method: str, version: float, score_version: float
) -> tuple[list[str], dict[str, float]]:
    t = _ranked(path, method, version, score_version)
    ids = t.index.to_numpy(dtype=object).tolist()
    return ids, dict(zip(ids, t["score"].to_numpy(dtype=float).tolist(), strict=True))


def ranked_ids(run_dir: str | Path, method: str) -> tuple[list[str], dict[str, float]]:
    """ranked()'s ids, most harmful first, and sample_id -> score, as plain Python objects (cached
    and shared: never mutate them; 0.08 s to build at 51k, once instead of on every rerun)."""
    from engine.influence.scorestore import ScoreStore

    v = ScoreStore(run_dir).version(method)
    return _ranked_ids(str(run_dir), method, run_version(run_dir), v)


def score_methods(run_dir: str | Path) -> list[str]:
    from engine.export import score_methods as _methods

    return _methods(run_dir)


@st.cache_data(max_entries=32, show_spinner=False)
def _scores(path: str, method: str, version: float) -> pd.Series:
    from engine.export import method_scores

    return method_scores(path, method)


def scores(run_dir: str | Path, method: str) -> pd.Series:
    """Validation-query scores of `method`, indexed by sample_id (negative = harmful; cached)."""
    from engine.influence.scorestore import ScoreStore

    return _scores(str(run_dir), method, ScoreStore(run_dir).version(method))


def score_info(run_dir: str | Path, method: str) -> dict[str, object]:
    """What is stored beside the method's validation scores: seconds, created, n (or {})."""
    from engine.influence.scorestore import ScoreStore

    for p in ScoreStore(run_dir).stored():
        if p.get("method") == method and p.get("query") == "val":
            return dict(p)
    return {}


# -- thumbnails -------------------------------------------------------------------------------
@st.cache_data(max_entries=4096, show_spinner=False)
def _thumb(path: str, version: float, split: str, sample_id: str, px: int) -> bytes:
    from PIL import Image

    b = _bundle(path, version)
    sp = b.split(split)
    idx = _index(path, version, split).get(sample_id)
    if idx is None:
        return b""
    a = sp.images[idx].numpy()  # uint8 (C, H, W)
    img = Image.fromarray(a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0)))
    h, w = a.shape[1:]
    scale = px / max(h, w)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@st.cache_resource(max_entries=12, show_spinner=False)
def _index(path: str, version: float, split: str) -> dict[str, int]:
    return {sid: i for i, sid in enumerate(_bundle(path, version).split(split).ids)}


def thumbnail(
    run_dir: str | Path, sample_id: str, *, split: str = "train", px: int = THUMB_PX
) -> bytes:
    """A small PNG (longest side `px`) of one image; upscaled with nearest neighbour (cached)."""
    return _thumb(str(run_dir), run_version(run_dir), split, sample_id, px)


def thumbnail_url(
    run_dir: str | Path, sample_id: str, *, split: str = "train", px: int = THUMB_PX
) -> str:
    """thumbnail() as a ``data:image/png;base64,...`` URL ("" if the id is unknown).

    st.image shows a data URL as it is: the PNG rides in the page's message instead of being
    re-opened with PIL, stored in Streamlit's media manager and fetched by one HTTP request per
    tile (24 per gallery page)."""
    png = thumbnail(run_dir, sample_id, split=split, px=px)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii") if png else ""


@st.cache_data(max_entries=8, show_spinner=False)
def _known_errors(path: str, version: float) -> frozenset[str]:
    m = _bundle(path, version).manifest
    return frozenset(m.loc[(m["split"] == "train") & m["flipped"].astype(bool), "sample_id"])


def known_errors(run_dir: str | Path) -> set[str]:
    """Training ids whose label is known to be wrong (the manifest's `flipped`): flipped by injected
    noise, or listed in the source's MISLABELED.csv (the bundled sample has one)."""
    return set(_known_errors(str(run_dir), run_version(run_dir)))
