"""engine.executor: inline, local processes and Ray give the same results; workers that die are
retried once, then named; an exception in the driver cancels what is outstanding."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigError, TrainConfig
from engine.data import DataSpec
from engine.executor import (
    ExecutorSettings,
    LocalExecutor,
    Task,
    TaskFailed,
    make_executor,
    use_executor,
)
from tests.engine import executor_faults as faults

ROOT = Path(__file__).resolve().parents[2]
INLINE = ExecutorSettings("local", workers=1)
LOCAL = ExecutorSettings("local", workers=2)


def _strip(obj: Any) -> Any:
    """The result without what differs between two calls (wall times, ids, folders)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()
                if k not in ("seconds", "id", "path", "figure", "train_seconds", "created")}  # fmt: skip
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def same(a: Any, b: Any) -> bool:
    return json.dumps(_strip(a), sort_keys=True) == json.dumps(_strip(b), sort_keys=True)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[ExecutorSettings]:
    """A real local Ray (ray.init(num_cpus=2)), its workers able to import the tests' tasks."""
    ray = pytest.importorskip("ray")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + old if old else "")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ExecutorSettings("ray")
    finally:
        from engine.executor import forget_ray

        forget_ray()
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_settings_check_their_values() -> None:
    with pytest.raises(ConfigError, match="executor must be local or ray"):
        ExecutorSettings("slurm").validate()
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        ExecutorSettings("local", workers=0).validate()
    s = ExecutorSettings("ray", address="10.0.0.1:6379")
    assert ExecutorSettings.from_dict(s.to_dict()) == s
    assert "10.0.0.1:6379" in s.describe()
    assert ExecutorSettings("local", workers=1).describe() == "in one process, one after another"


def test_results_come_back_in_task_order_with_progress(tmp_path: Path) -> None:
    tasks = [Task(faults.echo, {"value": v}, f"echo {v}") for v in range(7)]
    seen: list[tuple[int, int]] = []
    pool = LocalExecutor(2)
    pool.start()  # instant tasks: an unstarted pool would run them all in the driver
    try:
        for ex in (make_executor(INLINE), pool):
            seen.clear()
            got = ex.map(tmp_path, tasks, progress=lambda d, t, _v: seen.append((d, t)))
            assert got == [(str(tmp_path), v) for v in range(7)]
            assert seen[-1] == (7, 7) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    finally:
        pool.close()


def test_the_driver_works_while_the_workers_start(tmp_path: Path) -> None:
    """A small fan-out is done in the driver without starting the pool (it would take longer
    than the work); once the pool is up, tasks run in the workers."""
    ex = LocalExecutor(2)
    try:
        tasks = [Task(faults.whose, {}) for _ in range(4)]
        assert set(ex.map(tmp_path, tasks)) == {os.getpid()}  # workers take seconds to start
        ex.start()
        assert os.getpid() not in ex.map(tmp_path, tasks)
    finally:
        ex.close()


def test_a_task_error_is_raised_as_is() -> None:
    with pytest.raises(ValueError, match="bad spec"):
        make_executor(LOCAL).map(
            ".", [Task(faults.fail, {"message": "bad spec"}), Task(faults.echo, {"value": 1})]
        )


def test_a_killed_local_worker_is_retried_once_then_named(tmp_path: Path) -> None:
    ex = LocalExecutor(2)
    ex.start()  # a task the driver ran itself while workers start would take the driver down
    try:
        marker = tmp_path / "died"
        tasks = [Task(faults.die_once, {"marker": str(marker), "value": 5}, "the dying one")]
        tasks += [Task(faults.echo, {"value": v}) for v in range(3)]
        got = ex.map(tmp_path, tasks)
        assert marker.exists() and got[0] == 5 and [g[1] for g in got[1:]] == [0, 1, 2]
        # the retry goes to a worker, never to the driver, even while a new worker starts
        with pytest.raises(
            TaskFailed, match="fresh retrain, seed 9: its worker process died twice"
        ):
            ex.map(tmp_path, [Task(faults.always_die, {}, "fresh retrain, seed 9"),
                              Task(faults.echo, {"value": 1})])  # fmt: skip
        assert ex.map(tmp_path, [Task(faults.echo, {"value": v}) for v in range(2)])[1][1] == 1
    finally:
        ex.close()


def test_an_exception_in_the_driver_cancels_the_outstanding_tasks(tmp_path: Path) -> None:
    ex = LocalExecutor(2)
    try:
        ex.start()
        outs = [tmp_path / f"out{i}" for i in range(4)]
        tasks = [Task(faults.slow_write, {"path": str(outs[0]), "seconds": 0.0})]
        tasks += [Task(faults.slow_write, {"path": str(p), "seconds": 3.0}) for p in outs[1:]]

        def interrupt(done: int, total: int, _v: float | None) -> None:
            raise KeyboardInterrupt  # what Ctrl-C (or a cancelled job's JobCancelled) does

        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            ex.map(tmp_path, tasks, progress=interrupt)
        assert time.perf_counter() - t0 < 3.0  # it did not wait for the slow ones
        time.sleep(3.5)
        assert outs[0].exists() and not any(p.exists() for p in outs[1:])
    finally:
        ex.close()


def test_a_missing_ray_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'retracer\[ray\]'"):
        make_executor(ExecutorSettings("ray", address="127.0.0.1:1"))
    assert main(["retrain", "--run-dir", str(tmp_path), "--executor", "ray"]) == 2


def test_every_executor_gives_the_same_fresh_retrain_trust_and_lds(
    run32: Path, tmp_path: Path, ray_local: ExecutorSettings
) -> None:
    import shutil

    from engine.experiments.lds import lds
    from engine.experiments.trust import trust
    from engine.influence.scorestore import ScoreStore
    from engine.loading import load_run
    from engine.retrain import retrain

    run32 = Path(shutil.copytree(run32, tmp_path / "run"))  # scores and truth are stored in it
    ScoreStore(run32).get_or_compute("sgd-influence", "val")  # the proof's prediction reads them

    ids = load_run(run32).bundle.train.ids
    pool = make_executor(LOCAL)
    assert isinstance(pool, LocalExecutor)
    pool.start()  # tiny retrains: without started workers the pool would run them in the driver
    got: dict[str, list[Any]] = {}
    for name, settings in (("inline", INLINE), ("local", LOCAL), ("ray", ray_local)):
        with use_executor(settings):
            got[name] = [
                retrain(run32, drop=ids[:8], mode="fresh", seeds=2, save=False),
                retrain(run32, drop=ids[:8], mode="all", control_draws=2, save=False),
                trust(run32, method="sgd-influence", k=6, save=False),
            ]
            for f in (run32 / "lds").glob("truth-*.json"):
                f.unlink()  # the ground truth is retrained by each executor, not read back
            got[name].append(lds(run32, methods=["sgd-influence"], fractions=[0.1], subsets=4,
                                 setting="fresh", seeds=2, save=False))  # fmt: skip
    assert got["inline"][0]["paired"] and len(got["inline"][0]["after"]["runs"]) == 2
    for name in ("local", "ray"):
        for a, b in zip(got["inline"], got[name], strict=True):
            assert same(a, b), name


def test_a_killed_ray_worker_is_retried_once_then_named(
    tmp_path: Path, ray_local: ExecutorSettings
) -> None:
    ex = make_executor(ray_local)
    marker = tmp_path / "died"
    got = ex.map(tmp_path, [Task(faults.die_once, {"marker": str(marker), "value": 3}),
                            Task(faults.echo, {"value": 4})])  # fmt: skip
    assert marker.exists() and got[0] == 3 and got[1][1] == 4
    with pytest.raises(TaskFailed, match="trust retrain 2: its Ray worker died twice"):
        ex.map(tmp_path, [Task(faults.always_die, {}, "trust retrain 2")])


@pytest.mark.slow
def test_noise_bench_is_the_same_inline_local_and_on_ray(
    tmp_path: Path, ray_local: ExecutorSettings
) -> None:
    from engine.experiments.noise_bench import noise_bench

    data = DataSpec(dataset="digits", n_train=240, n_val=80, n_test=80, noise=0.2, seed=0)
    cfg = TrainConfig(model="mlp", widths=[16], epochs=3, batch_size=32, lr=0.1)
    kw: dict[str, Any] = dict(data=data, cfg=cfg, run_dir=tmp_path / "noisy",
                              methods=["loss", "margin"], seeds=2)  # fmt: skip
    pool = make_executor(LOCAL)
    assert isinstance(pool, LocalExecutor)
    pool.start()
    results = []
    for settings in (INLINE, LOCAL, ray_local):
        with use_executor(settings):
            results.append(noise_bench(**kw))
    assert results[1]["run_reused"] and results[2]["run_reused"]
    for res in results[1:]:
        assert same({k: v for k, v in res.items() if k != "run_reused"},
                    {k: v for k, v in results[0].items() if k != "run_reused"})  # fmt: skip
