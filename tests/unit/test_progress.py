"""Progress lines: a bar with rate and time left on a terminal, plain lines elsewhere, never a \r in a log."""

from __future__ import annotations

import io

from hub.progress import Progress, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_durations_read_like_a_person_writes_them():
    assert [duration(s) for s in (4.4, 187, 7500)] == ["4s", "3m07s", "2h05m"]


def test_without_a_terminal_a_plain_line_every_few_seconds_and_no_carriage_return():
    out, clock = io.StringIO(), Clock()
    progress = Progress("loading", total=1000, stream=out, every_s=5, tty=False, clock=clock)
    for done in range(0, 1001, 100):  # 100 records a second
        clock.now += 1
        progress.update(done, extra="rejected 2")
    progress.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 3  # at 5 s, at 10 s, and the last
    assert lines[0] == "loading  400/1,000 records (40%)  80/s  ETA 8s  elapsed 5s  rejected 2"
    assert lines[-1].startswith("loading  1,000/1,000 records (100%)  91/s  elapsed 11s")


def test_on_a_terminal_one_line_redrawn_with_a_bar():
    out, clock = io.StringIO(), Clock()
    progress = Progress("export", total=200, unit="golden records", stream=out, tty=True, clock=clock, width=10)
    clock.now += 1
    progress.update(50)
    clock.now += 1
    progress.update(100)
    progress.finish()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.startswith("\r")
    assert "[#####.....]  100/200 golden records (50%)" in text


def test_an_unknown_total_shows_count_and_rate_only():
    out, clock = io.StringIO(), Clock()
    progress = Progress("following", stream=out, tty=False, clock=clock)
    clock.now += 2
    progress.update(30)
    progress.finish()
    assert out.getvalue().splitlines()[-1] == "following  30 records  15/s  elapsed 2s"
