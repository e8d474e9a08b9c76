"""The demo flow end to end through the engine: train, score, recommend, tick, prove.

    .venv/bin/python bench/demo_proof.py [--seeds 10] [--k K] [--sample sample_data/digits]

What a new user does with `make demo`: the one button (train the demo MLP on the bundled sample,
score every image with the candidate methods, measure the recommendation), then "Tick the
recommended N" and "Retrain & compare" with fresh seeds and a random control. Prints each method's
precision on the known label errors, the measured table, the recommended method, the proof's
p-values (paired by seed, against the random control) on test loss and accuracy, and the wall
time. The last line is JSON: {"recommended", "k", "p_test_loss", "p_test_acc", "seconds", ...}.
The oracle (exactly the known errors removed) is proven the same way beside it, as the ceiling.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    from engine.config import TrainConfig
    from engine.data import DataSpec
    from engine.recommend import score_and_recommend, table_frame
    from engine.retrain import retrain
    from engine.sample_data import DEMO_SEEDS, SAMPLE_DIGITS, demo_spec
    from engine.train import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=DEMO_SEEDS)
    ap.add_argument("--k", type=int, default=None)
    ap.add_argument("--sample", default=str(SAMPLE_DIGITS))
    a = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "demo"
        data, cfg = demo_spec(a.sample)
        train(run, DataSpec.from_dict(data), TrainConfig.from_dict(cfg))
        t_train = time.perf_counter() - t0
        rec = score_and_recommend(run, k=a.k)
        t_rec = time.perf_counter() - t0
        t = table_frame(rec)
        print(f"demo run trained in {t_train:.1f} s; scored and recommended by {t_rec:.1f} s")
        print(f"top {rec['k']} of each method removed (all mode), judged on "
              f"{rec['judged_on']['n']} validation images (each by a removal whose scores never saw it):")  # fmt: skip
        print(t.round(4).to_string(index=False, na_rep=""))
        print(rec["why"])
        out: dict[str, object] = {"recommended": rec["method"], "k": rec["k"]}
        if rec["method"] is None:
            out.update(p_test_loss=None, p_test_acc=None, seconds=time.perf_counter() - t0)
            print(json.dumps(out))
            return
        proof = retrain(run, drop=rec["drop"], mode="fresh", seeds=a.seeds, save=False)
        secs = time.perf_counter() - t0
        st = proof["stats"]
        print(f"proof ({a.seeds} paired fresh seeds, random control): {proof['verdict']}")
        known = proof_known(run)
        oracle = (
            retrain(run, drop=known, mode="fresh", seeds=a.seeds, save=False) if known else None
        )
        if oracle is not None:
            print(f"oracle (the {len(known)} known errors): {oracle['verdict']}")
        s = proof["after"]["summary"], proof["before"]["summary"], proof["control_runs"]["summary"]
        out.update(
            precision={r["method"]: r.get("precision") for r in rec["table"] if r["k"] == rec["k"]},
            p_test_loss=st["test_loss"]["after_vs_control"]["p"],
            p_test_acc=st["test_acc"]["after_vs_control"]["p"],
            test_acc={g: x["test_acc"]["mean"] for g, x in zip(("after", "before", "control"), s, strict=True)},
            test_loss={g: x["test_loss"]["mean"] for g, x in zip(("after", "before", "control"), s, strict=True)},
            verdict_kind=proof["verdict_kind"],
            oracle_p_test_acc=oracle["stats"]["test_acc"]["after_vs_control"]["p"] if oracle else None,
            seeds=a.seeds,
            seconds=secs,
        )  # fmt: skip
        print(f"demo flow (train -> score -> recommend -> fresh proof): {secs:.1f} s wall")
        print(json.dumps(out))


def proof_known(run: Path) -> list[str]:
    import pandas as pd

    m = pd.read_csv(run / "manifest.csv", dtype={"sample_id": str})
    return m.loc[(m["split"] == "train") & m["flipped"].astype(bool), "sample_id"].tolist()


if __name__ == "__main__":
    main()
