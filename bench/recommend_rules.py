"""Which selection rule should the recommendation use? Measured on noise-bench's 8 settings.

    OMP_NUM_THREADS=1 .venv/bin/python bench/recommend_rules.py --out runs/rules [--seeds 3]
    .venv/bin/python bench/recommend_rules.py --out runs/rules --report      # offline, from the JSON

For each setting (digits and a 3k Fashion-MNIST subset; 20% / 40% noise; uniform / pair) it runs
noise-bench (its test accuracies after removing each method's top n with S fresh seeds are the
truth a rule is scored by), then measures every candidate on the validation split as
engine.recommend does, in several ways (mode all; mode fresh with 2 and 4 seeds), and keeps every
table in `<out>/<setting>.json`. The report then scores each selection rule offline: its pick's
test accuracy minus the best single method's (chosen on test after the fact), per setting, and
how many settings are within 0.5 points. Rules that merge several methods' rankings get their own
fresh retrains (same seeds as every noise-bench row), so they are scored on the same footing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

METHODS = "loss,margin,hydra,sgd-influence,confident-learning,combined"
FMNIST = "/usr/share/datasets/fashion-mnist"
DATASETS: dict[str, list[str]] = {
    "digits": ["--dataset", "digits"],
    "fmnist": ["--dataset", "fashion-mnist", "--data-dir", FMNIST, "--n-train", "3000",
               "--n-val", "1000", "--n-test", "2000", "--epochs", "3"],
}  # fmt: skip
MEASURES = {"all": ("all", 1), "fresh2": ("fresh", 2), "fresh4": ("fresh", 4)}


def measure(out: Path, name: str, argv: list[str], seeds: int) -> dict[str, Any]:
    """noise-bench on one setting, then every measurement of the candidates; saved as JSON."""
    from engine.cli import build_parser
    from engine.commands.training import data_spec_from_args, train_config_from_args
    from engine.experiments.noise_bench import noise_bench
    from engine.recommend import recommend

    path = out / f"{name}.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    a = build_parser().parse_args(["noise-bench", *argv])
    run = out / "runs" / name
    res = noise_bench(data=data_spec_from_args(a), cfg=train_config_from_args(a), run_dir=run,
                      methods=METHODS.split(","), seeds=seeds)  # fmt: skip
    names = METHODS.split(",")
    got: dict[str, Any] = {
        "setting": name,
        "n": res["n_flipped"],
        "fresh_seeds": res["fresh_seeds"],
        "rows": {r["method"]: r["test_accs"] for r in res["rows"]},
        "measures": {},
    }
    for label, (mode, s) in MEASURES.items():
        r = recommend(run, methods=names, k=res["n_flipped"], mode=mode, seeds=s, save=False)
        got["measures"][label] = {"table": r["table"], "random": r["random"]}
    path.write_text(json.dumps(got))
    return got


def _key(row: dict[str, Any], objective: str) -> tuple[float, float]:
    acc, loss = row["d_val_acc"], -row["d_val_loss"]
    return (acc, loss) if objective == "acc" else (loss, acc)


def pick_single(m: dict[str, Any], objective: str) -> str | None:
    """engine.recommend.choose on one measurement (its table at one k): the best row that helps
    and beats random removal."""
    from engine.recommend import choose

    # the stored "hurts" was judged by the objective the measurement ran with (acc); choose's own
    # must-help test decides for `objective`
    rows = [{**r, "hurts": False} for r in m["table"]]
    best = choose(rows, {int(r["k"]): m["random"] for r in rows}, objective)
    return None if best is None else str(best["method"])


def rules(got: dict[str, Any]) -> dict[str, str | None]:
    """Each rule's pick (a method name, or None = remove nothing)."""
    out: dict[str, str | None] = {}
    for label, m in got["measures"].items():
        for obj in ("acc", "loss"):
            out[f"{label}/{obj}"] = pick_single(m, obj)
    return out


MERGES = ("helping", "top2", "top3")


def merge_members(m: dict[str, Any], objective: str, how: str) -> list[str]:
    """The methods a merge rule averages: those that help and beat random ("helping"), or the
    best two / three of them by the objective."""
    rand = m["random"]
    ok = [r for r in m["table"] if _key(r, objective) > (0.0, 0.0)
          and _key(r, objective) > _key(rand, objective)]  # fmt: skip
    ok.sort(key=lambda r: _key(r, objective), reverse=True)
    names = [r["method"] for r in ok]
    return names if how == "helping" else names[: int(how[-1])]


def merge_truth(out: Path, name: str) -> None:
    """Fresh retrains (the noise-bench seeds) of each merge rule's top n; added to the JSON."""
    from engine import tasks
    from engine.executor import current_executor
    from engine.influence.scorestore import ScoreStore

    path = out / f"{name}.json"
    got = json.loads(path.read_text())
    run = out / "runs" / name
    store = ScoreStore(run)
    scores = {m: store.get_or_compute(m, "val").iloc[:, 1].to_numpy(np.float64)
              for m in METHODS.split(",")}  # fmt: skip
    got.setdefault("merged", {})
    plan: list[tuple[str, list[str]]] = []
    for label, m in got["measures"].items():
        for obj in ("acc", "loss"):
            for how in MERGES:
                rule = f"{label}/{obj}/merge-{how}"
                members = merge_members(m, obj, how)
                if rule not in got["merged"] and len(members) >= 2:
                    plan.append((rule, members))
    todo: dict[tuple[str, ...], list[str]] = {}
    for rule, members in plan:
        todo.setdefault(tuple(sorted(members)), []).append(rule)
    jobs, keys = [], list(todo)
    for members in keys:
        drop = np.argsort(merged(scores, list(members)), kind="stable")[: got["n"]]
        jobs += [tasks.retrain("fresh", tasks.changes_of(drop), seed=s, budget="steps")
                 for s in got["fresh_seeds"]]  # fmt: skip
    res = current_executor().map(run, jobs)
    s = len(got["fresh_seeds"])
    for i, members in enumerate(keys):
        accs = [r["test_acc"] for r in res[i * s : (i + 1) * s]]
        for rule in todo[members]:
            got["merged"][rule] = {"methods": list(members), "test_accs": accs}
    path.write_text(json.dumps(got))


def report(out: Path) -> None:
    rows = []
    for path in sorted(out.glob("*.json")):
        got = json.loads(path.read_text())
        truth = {k: float(np.mean(v)) for k, v in got["rows"].items()}
        singles = {k: v for k, v in truth.items()
                   if k not in ("no filtering", "oracle", "recommended")}  # fmt: skip
        best = max(singles, key=lambda k: singles[k])
        for rule, pick in rules(got).items():
            acc = truth["no filtering"] if pick is None else truth[pick]
            rows.append((got["setting"], rule, pick, acc - truth[best], best, truth[best]))
        for label in got["measures"]:
            for obj in ("acc", "loss"):
                for how in MERGES:
                    rule = f"{label}/{obj}/merge-{how}"
                    mg = got.get("merged", {}).get(rule)
                    if mg is None:  # fewer than two members: the single pick
                        pick = pick_single(got["measures"][label], obj)
                        acc = truth["no filtering"] if pick is None else truth[pick]
                        rows.append((got["setting"], rule, pick, acc - truth[best], best, 0.0))
                    else:
                        acc = float(np.mean(mg["test_accs"]))
                        rows.append((got["setting"], rule, "+".join(mg["methods"]),
                                     acc - truth[best], best, 0.0))  # fmt: skip
    by_rule: dict[str, list[float]] = {}
    for setting, rule, pick, gap, best, _ in rows:
        by_rule.setdefault(rule, []).append(gap)
        print(f"{setting:<22}{rule:<26}{str(pick):<22}{gap * 100:+6.2f}  (best {best})")
    print()
    for rule, gaps in by_rule.items():
        within = sum(g >= -0.005 for g in gaps)
        print(f"{rule:<26} within 0.5 points: {within}/{len(gaps)}; worst {min(gaps) * 100:+.2f}; "
              f"mean {np.mean(gaps) * 100:+.2f}")  # fmt: skip


def merged(scores: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """The mean rank of several methods' scores (N,): low = harmful, as the scores."""
    return np.mean([rankdata(scores[m]) for m in names], axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/rules")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated setting names")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.report:
        for ds, argv in DATASETS.items():
            for kind in ("pair", "uniform"):
                for noise in ("0.2", "0.4"):
                    name = f"{ds}-{kind}-{noise}"
                    if a.only and name not in a.only.split(","):
                        continue
                    measure(out, name, [*argv, "--noise", noise, "--noise-kind", kind], a.seeds)
                    merge_truth(out, name)
                    print(f"measured {name}", flush=True)
    report(out)


if __name__ == "__main__":
    main()
