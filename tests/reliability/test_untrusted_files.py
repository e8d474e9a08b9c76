"""Untrusted files: zips at the training door are refused when they try path traversal, links
or a zip bomb (the extractor itself: tests/engine/data/test_zipsafe.py), nothing in the code
base unpickles data, and Pillow's decompression-bomb guard is still on after importing the engine."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import stat
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.reliability.conftest import FAST_TRAIN, error_line, image_folder, snapshot

Cli = Callable[..., tuple[int, str, str]]
ROOT = Path(__file__).resolve().parents[2]


def _zip_of(folder: Path, out: Path, extra: Callable[[zipfile.ZipFile], None]) -> Path:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, p.relative_to(folder.parent).as_posix())
        extra(z)
    return out


def _traversal(z: zipfile.ZipFile) -> None:
    z.writestr("pets/../../../escaped.txt", b"pwned")


def _symlink(z: zipfile.ZipFile) -> None:
    link = zipfile.ZipInfo("pets/cat/link.png")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z.writestr(link, "/etc/passwd")


def _bomb(z: zipfile.ZipFile) -> None:
    z.writestr("pets/cat/zeros.png", b"\0" * (16 << 20))


@pytest.mark.parametrize(
    ("extra", "expect"),
    [(_traversal, "path traversal"), (_symlink, "symlink refused"), (_bomb, "zip bomb?")],
)
def test_hostile_zip_is_refused_at_the_door(
    cli: Cli, victim: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    extra: Callable[[zipfile.ZipFile], None], expect: str,
) -> None:  # fmt: skip
    cache = tmp_path / "cache"
    monkeypatch.setenv("RETRACER_CACHE", str(cache))
    pets = image_folder(tmp_path / "src" / "pets", {"cat": 6, "dog": 6})
    (tmp_path / "up").mkdir()
    z = _zip_of(pets, tmp_path / "up" / "pets.zip", extra)
    before = snapshot(victim)
    rc, _, err = cli(
        "train", "--dataset", f"imagefolder:{z}", *FAST_TRAIN, "--run-dir", victim, "--overwrite"
    )
    assert rc == 2 and expect in error_line(err)
    assert snapshot(victim) == before
    assert not list(tmp_path.rglob("escaped.txt")) and not list(ROOT.rglob("escaped.txt"))
    unzipped = cache / "unzipped"
    assert not unzipped.exists() or not any(
        p for p in unzipped.iterdir() if not p.name.startswith(".")
    ), "a refused archive left files in the cache"


def test_a_clean_zip_trains(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRACER_CACHE", str(tmp_path / "cache"))
    pets = image_folder(tmp_path / "src" / "pets", {"cat": 6, "dog": 6})
    z = _zip_of(pets, tmp_path / "pets.zip", lambda z: None)
    rc, _, err = cli(
        "train", "--dataset", f"imagefolder:{z}", *FAST_TRAIN, "--run-dir", tmp_path / "r"
    )
    assert rc == 0, err


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (
                f"{getattr(f.value, 'id', getattr(f.value, 'attr', '?'))}.{f.attr}"
                if isinstance(f, ast.Attribute)
                else getattr(f, "id", "?")
            )
            out.append((name, node))
    return out


def _kw(call: ast.Call, name: str) -> object:
    for k in call.keywords:
        if k.arg == name:
            return ast.literal_eval(k.value) if isinstance(k.value, ast.Constant) else "?"
    return None


def test_nothing_unpickles_data() -> None:
    """No pickle / joblib / dill loads; torch.load only with weights_only=True; np.load never
    with allow_pickle=True (engine, app, bench)."""
    bad = []
    files = [p for d in ("engine", "app", "bench") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 30
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for name, call in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{call.lineno} {name}"
            if name in ("pickle.load", "pickle.loads", "cPickle.load", "joblib.load", "dill.load",
                        "dill.loads", "pickle.Unpickler", "marshal.loads", "shelve.open"):  # fmt: skip
                bad.append(where)
            if name == "torch.load" and _kw(call, "weights_only") is not True:
                bad.append(where + " without weights_only=True")
            numpy_load = name.endswith(".load") and name.split(".")[0] in ("np", "numpy")
            if numpy_load and _kw(call, "allow_pickle") not in (None, False):
                bad.append(where + " with allow_pickle")
            if name == "read_pickle" or name.endswith(".read_pickle"):
                bad.append(where)
    assert bad == []


def test_the_decompression_bomb_guard_stays_on_after_importing_the_engine() -> None:
    default = int(1024 * 1024 * 1024 // 4 // 3)
    import engine

    for mod in pkgutil.walk_packages(engine.__path__, "engine."):
        importlib.import_module(mod.name)
    assert default == Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert not any(
            f[0] == "ignore"
            and f[2] is not None
            and issubclass(Image.DecompressionBombWarning, f[2])
            for f in warnings.filters
        )
