"""bench.split_handler runs the Split handler's own steps in process: every call answered
(by the group's recorded first response), a CPU time per call for each repetition."""

from __future__ import annotations

from bench import split_handler


def test_the_handler_bench_measures_each_repetition(capsys):
    assert split_handler.main(["--calls", "50", "--repeat", "2"]) == 0
    line = capsys.readouterr().out
    assert line.count(" us a call; best ") == 1
    times = [float(x) for x in line.split(": ", 1)[1].split(" us")[0].split()]
    assert len(times) == 2 and all(t > 0 for t in times)
