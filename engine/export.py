"""What leaves the tool: the ticked samples as a table, and a cleaned label file.

``export_selection`` -> DataFrame with one row per ticked (dropped or relabelled) sample:
sample_id, path, given_label, predicted_label, score, method, action ('drop' | 'relabel' | 'flag'),
new_label (the relabel's class name, '' for drops). Labels are class names.

``cleaned_labels`` -> (filename, bytes) in the input's own format, with dropped samples left out
and relabels applied:
- ``csv:FILE`` source: the original CSV's rows and columns, dropped rows removed, the label
  column rewritten for relabelled rows (rows of classes the run did not use are kept as they were);
- ``imagefolder:PATH`` source: a ``path,label`` CSV with paths relative to PATH (loadable back
  with ``csv:`` when saved in PATH), one row per sample of the run;
- any other source (digits, mnist, ...): a ``sample_id,label`` CSV.

Scores: ``method_scores(run_dir, method)`` loads the validation-query scores through
engine.influence.api (negative = harmful); ``score_methods(run_dir)`` lists the methods present.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from engine.runs import RunDir, atomic_write_json, atomic_write_text, read_json
from engine.selections import load_selections

__all__ = [
    "cleaned_labels",
    "export_selection",
    "method_scores",
    "run_predictions",
    "score_methods",
]

EXPORT_COLUMNS = [
    "sample_id", "path", "given_label", "predicted_label", "score", "method", "action", "new_label",
]  # fmt: skip


def score_methods(run_dir: str | Path) -> list[str]:
    """Methods with stored validation-query scores in the run, sorted by name."""
    from engine.influence.scorestore import ScoreStore

    return ScoreStore(run_dir).methods("val")


def method_scores(run_dir: str | Path, method: str) -> pd.Series:
    """Validation-query scores of `method` as a float Series indexed by sample_id.

    Negative = harmful. Raises RunError when absent or computed for another run.
    """
    from engine.influence.scorestore import ScoreStore

    return ScoreStore(run_dir).series(method, "val")


_PRED_FILE, _PRED_KEY = "predictions.csv", "predictions.json"
_PRED_COLUMNS = ["sample_id", "split", "predicted", "confidence", "prob_given", "loss"]
# the files whose change means new final weights or new images / labels
_PRED_INPUTS = (
    "config.json",
    "status.json",
    "data.safetensors",
    "manifest.csv",
    "trajectory/meta.json",
)


def _predictions_key(run: Path) -> list[list[int]]:
    out = []
    for name in _PRED_INPUTS:
        try:
            st = (run / name).stat()
            out.append([st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([-1, -1])
    return out


def run_predictions(run_dir: str | Path) -> pd.DataFrame:
    """Predictions of the final weights on every split, saved in the run once computed.

    Columns: sample_id, split, predicted (class index), confidence (probability of the predicted
    class), prob_given (probability of the given label), loss (the training loss of the given label,
    engine.models.per_sample_loss, its float32 values kept exactly). A forward pass over every image (12 s
    at 70k Fashion-MNIST images, torch's import included) the first time; afterwards read back
    from R/predictions.csv (0.3 s at 70k) while the run's weights, images and labels are unchanged
    (R/predictions.json holds the sizes and times of the files they come from). A run folder
    that cannot be written to only loses the saving.
    """
    run = Path(run_dir)
    key = _predictions_key(run)
    try:
        saved = read_json(run / _PRED_KEY)
    except (OSError, ValueError):
        saved = None
    if isinstance(saved, dict) and saved.get("key") == key and (run / _PRED_FILE).is_file():
        try:
            df = pd.read_csv(run / _PRED_FILE, dtype={"sample_id": str, "split": str})
            if list(df.columns) == _PRED_COLUMNS:
                return df
        except (OSError, ValueError, pd.errors.ParserError):
            pass  # damaged: compute again
    df = _compute_predictions(run)
    if _predictions_key(run) == key:  # not retrained meanwhile
        try:
            atomic_write_text(run / _PRED_FILE, df.to_csv(index=False))
            atomic_write_json(run / _PRED_KEY, {"key": key})
        except OSError:
            pass
    return df


def _compute_predictions(run_dir: str | Path) -> pd.DataFrame:
    import torch

    from engine.loading import load_run
    from engine.models import per_sample_loss, probabilities
    from engine.problem import split_logits

    lr = load_run(run_dir, trusted=False)  # every image, against the labels as given
    theta = lr.final_theta
    frames = []
    for s in ("train", "val", "test"):
        sp = lr.bundle.split(s)
        with torch.no_grad():
            logits = split_logits(lr.problem, theta, sp)
            loss = per_sample_loss(logits, sp.labels.to(logits.device)).cpu().double().numpy()
            probs = probabilities(logits).cpu().double()
        pred = probs.argmax(dim=1)
        y = sp.labels.long()
        frames.append(
            pd.DataFrame(
                {
                    "sample_id": sp.ids,
                    "split": s,
                    "predicted": pred.numpy(),
                    "confidence": probs.max(dim=1).values.numpy(),
                    "prob_given": probs.gather(1, y[:, None]).squeeze(1).numpy(),
                    "loss": loss,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def export_selection(
    run_dir: str | Path,
    *,
    method: str | None = None,
    top_k: int = 0,
    predictions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per ticked sample (see the module docstring).

    method: which scores fill the score column (default: the first method with scores).
    top_k: also add the method's k most harmful samples that are not ticked, action 'flag'.
    predictions: a run_predictions() frame the caller already has (else computed).
    """
    run = RunDir(run_dir)
    sel = load_selections(run.path)
    names = _class_names(run.path)
    man = pd.read_csv(run.file("manifest.csv"), dtype={"sample_id": str, "path": str})
    man = man.set_index("sample_id")
    if method is None:
        methods = score_methods(run.path)
        method = methods[0] if methods else None
    scores = method_scores(run.path, method) if method else pd.Series(dtype=np.float64)
    ids = [i for i in sorted(sel.ids) if i in man.index]
    worst = scores.sort_values(kind="stable").index[: max(int(top_k), 0)]
    ids += [i for i in worst if i not in sel.ids and i in man.index]
    if not ids:
        return pd.DataFrame(columns=EXPORT_COLUMNS)
    preds = run_predictions(run.path) if predictions is None else predictions
    pred = preds.set_index("sample_id")["predicted"]
    rows = []
    for i in ids:
        relabel = sel.relabel.get(i)
        action = "drop" if i in sel.drop else "relabel" if i in sel.relabel else "flag"
        rows.append(
            {
                "sample_id": i,
                "path": "" if pd.isna(man.at[i, "path"]) else man.at[i, "path"],
                "given_label": names[int(man.at[i, "label"])],
                "predicted_label": names[int(pred[i])] if i in pred.index else "",
                "score": float(scores[i]) if i in scores.index else np.nan,
                "method": method or "",
                "action": action,
                "new_label": names[relabel] if action == "relabel" and relabel is not None else "",
            }
        )
    return pd.DataFrame(rows, columns=EXPORT_COLUMNS)


def _class_names(run_dir: Path) -> list[str]:
    return (run_dir / "classes.txt").read_text(encoding="utf-8").splitlines()


def cleaned_labels(run_dir: str | Path) -> tuple[str, bytes]:
    """(suggested file name, CSV bytes) of the labels with drops removed and relabels applied."""
    run = RunDir(run_dir)
    sel = load_selections(run.path)
    names = _class_names(run.path)
    dataset = str(run.config["data"]["dataset"])
    kind, _, arg = dataset.partition(":")
    man = pd.read_csv(run.file("manifest.csv"), dtype={"sample_id": str, "path": str})
    if kind == "csv" and Path(arg).is_file():
        return f"{Path(arg).stem}-cleaned.csv", _clean_csv(Path(arg), sel.drop, sel.relabel, names)
    keep = man[~man["sample_id"].isin(sel.drop)]
    labels = [
        names[sel.relabel[i]] if i in sel.relabel else names[int(lab)]
        for i, lab in zip(keep["sample_id"], keep["label"], strict=True)
    ]
    first = "path" if kind == "imagefolder" else "sample_id"
    out = pd.DataFrame({first: keep["sample_id"].to_numpy(), "label": labels})
    stem = Path(arg.rstrip("/")).stem if arg else kind
    return f"{stem}-cleaned-labels.csv", out.to_csv(index=False).encode("utf-8")


def _clean_csv(src: Path, drop: set[str], relabel: dict[str, int], names: list[str]) -> bytes:
    """The source CSV with dropped rows left out and relabelled rows' label replaced."""
    base = Path(os.path.normpath(src.parent.absolute()))
    with open(src, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [h.strip().lower() for h in rows[0]]
    pcol, lcol = header.index("path"), header.index("label")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(rows[0])
    for r in rows[1:]:
        if not any(c.strip() for c in r):
            continue
        p = r[pcol].strip().replace("\\", "/")
        sid = Path(os.path.normpath(base / p)).relative_to(base).as_posix()
        if sid in drop:
            continue
        if sid in relabel:
            r = list(r)
            r[lcol] = names[relabel[sid]]
        w.writerow(r)
    return buf.getvalue().encode("utf-8")
