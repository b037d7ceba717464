"""The CLI's progress bar keeps redrawing while a long interleaved session gives it no updates."""

from __future__ import annotations

import io
import time

from hil.commands.common import progress_bar


def test_progress_bar_redraws_without_updates_and_stops_when_closed():
    out = io.StringIO()
    bar = progress_bar(10, "wl", "measuring", file=out)
    deadline = time.monotonic() + 20  # no update: only the ticker draws (once a second, on a busy machine later)
    while out.getvalue().count("\r") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    drawn = out.getvalue().count("\r")
    bar.close()
    after_close = out.getvalue().count("\r")
    time.sleep(1.5)
    assert drawn >= 3  # the first draw and at least two ticks
    assert out.getvalue().count("\r") == after_close  # the ticker stopped with the bar
    assert "0/10" in out.getvalue()
