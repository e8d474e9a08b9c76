"""Property tests for the label CSV parser: valid tables round-trip, bad columns always raise."""

from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.data import DataError
from engine.data.sources.files import read_label_csv

SPLITS = {"train": "train", "val": "val", "test": "test", "validation": "val", "": ""}
name_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)
file_name = st.tuples(st.one_of(st.none(), name_part), name_part).map(
    lambda t: (f"{t[0]}/" if t[0] else "") + f"{t[1]}.png"
)
# Labels: any text without surrounding whitespace (it is stripped) or NUL, or integers.
text_label = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=12,
).filter(lambda s: s == s.strip() and s != "")
int_label = st.integers(min_value=-50, max_value=10_000).map(str)
label = st.one_of(text_label, int_label)
split_value = st.sampled_from(sorted(SPLITS)).flatmap(
    lambda s: st.sampled_from([s, s.upper(), s.capitalize(), f" {s} "])
)

_INT = re.compile(r"^[+-]?\d+$")


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]], list[str], list[str], list[str]]:
    """(header, rows, names, labels, splits) of a CSV whose rows are all valid."""
    names = draw(st.lists(file_name, min_size=1, max_size=12, unique_by=lambda n: n.split("/")[-1]))
    names = [
        n for n in names if n.split("/")[0] != n.split("/")[-1]
    ]  # a file cannot also be a folder
    assume(names)
    labels = draw(
        st.lists(
            st.one_of(label, st.sampled_from(["cat", "dog", "1", "2"])),
            min_size=len(names),
            max_size=len(names),
        )
    )
    with_split = draw(st.booleans())
    splits = (
        draw(st.lists(split_value, min_size=len(names), max_size=len(names)))
        if with_split
        else [""] * len(names)
    )
    extra = draw(st.booleans())
    cols = ["path", "label"] + (["split"] if with_split else []) + (["note"] if extra else [])
    order = draw(st.permutations(cols))
    header = [draw(st.sampled_from([c, c.upper(), f" {c}"])) for c in order]
    rows = []
    for i, n in enumerate(names):
        prefix = draw(st.sampled_from(["", "./"]))
        vals = {
            "path": prefix + n,
            "label": labels[i],
            "split": splits[i],
            "note": f"row {i}, with, commas",
        }
        rows.append([vals[c] for c in order])
    return header, rows, names, labels, [SPLITS[s.strip().lower()] for s in splits]


def _write(folder: Path, header: list[str], rows: list[list[str]]) -> Path:
    f = folder / "labels.csv"
    with f.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return f


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_any_valid_table_round_trips(
    table: tuple[list[str], list[list[str]], list[str], list[str], list[str]],
) -> None:
    header, rows, names, labels, splits = table
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        for n in names:
            (folder / n).parent.mkdir(parents=True, exist_ok=True)
            (folder / n).write_bytes(b"")  # the parser checks existence, not content
        f = _write(folder, header, rows)
        as_int = all(_INT.match(v) for v in labels)
        expected = [str(int(v)) for v in labels] if as_int else labels
        if len(set(expected)) < 2:
            with pytest.raises(DataError, match="only one class"):
                read_label_csv(f)
            return
        t = read_label_csv(f)
        assert t.ids == names
        assert [t.class_names[i] for i in t.labels] == expected
        assert t.class_names == (
            sorted(set(expected), key=int) if as_int else sorted(set(expected))
        )
        assert t.split == splits
        assert all(p == (folder / n).absolute() for p, n in zip(t.paths, names, strict=True))


column_name = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"),
    max_size=10,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(column_name, min_size=1, max_size=5), st.data())
def test_tables_without_path_or_label_always_raise(header: list[str], data: st.DataObject) -> None:
    normal = {h.strip().lower() for h in header}
    assume(not {"path", "label"} <= normal)
    rows = data.draw(
        st.lists(
            st.lists(
                st.sampled_from(["a.png", "x", "1", ""]), min_size=len(header), max_size=len(header)
            ),
            max_size=4,
        )
    )
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a.png").write_bytes(b"")
        f = _write(Path(d), header, rows)
        with pytest.raises(DataError, match="missing column"):
            read_label_csv(f)


@settings(max_examples=40, deadline=None)
@given(
    st.text(min_size=1, max_size=10).filter(
        lambda s: (
            s.strip().lower()
            not in {"train", "training", "val", "valid", "validation", "test", "testing", ""}
        )
    )
)
def test_unknown_split_values_always_raise(value: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        for n in ("a.png", "b.png"):
            (Path(d) / n).write_bytes(b"")
        f = _write(
            Path(d), ["path", "label", "split"], [["a.png", "x", "train"], ["b.png", "y", value]]
        )
        with pytest.raises(DataError, match="row 2"):
            read_label_csv(f)
