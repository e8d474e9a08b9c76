from __future__ import annotations

import pytest

from engine.progress import ProgressBar


def test_a_pipe_gets_the_start_one_line_per_tenth_and_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = ProgressBar("work")
    for i in range(1, 401):
        bar(i, 400)
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split("] ")[1].split()[0] for ln in lines] == [
        "1/400",
        *(f"{40 * k}/400" for k in range(1, 11)),
    ]
