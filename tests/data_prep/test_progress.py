"""Progress on a terminal is a bar; in a piped log, plain status lines."""

import io
import sys

from data_prep import progress
from data_prep.progress import progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_piped_log_gets_whole_lines(monkeypatch):
    monkeypatch.setattr(sys, "stderr", log := io.StringIO())
    monkeypatch.setattr(progress, "LOG_LINE_SECONDS", 0.0)  # a line at every update
    bar = progress_bar(total=4, unit="doc", desc="embed")
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0].startswith("embed: 0/4 doc (0%), 00:00 elapsed, ? left")
    assert lines[-1].startswith("embed: 4/4 doc (100%), 00:00 elapsed, 00:00 left")


def test_an_open_ended_count_has_no_share_or_time_left(monkeypatch):
    monkeypatch.setattr(sys, "stderr", log := io.StringIO())
    with progress_bar(unit="doc", desc="corpus") as bar:
        bar.update(3)
    assert log.getvalue().splitlines()[-1].startswith("corpus: 3 doc, 00:00 elapsed, ")


def test_lines_come_at_the_interval_not_at_every_update(monkeypatch):
    monkeypatch.setattr(sys, "stderr", log := io.StringIO())
    with progress_bar(total=1000, unit="doc", desc="embed") as bar:
        for _ in range(1000):
            bar.update(1)
    assert len(log.getvalue().splitlines()) == 2  # the start and the end


def test_a_terminal_gets_a_bar(monkeypatch):
    monkeypatch.setattr(sys, "stderr", terminal := _Terminal())
    with progress_bar(total=4, unit="doc", desc="embed") as bar:
        bar.update(4)
    assert "\r" in terminal.getvalue() and "|" in terminal.getvalue()  # redrawn in place
