"""tools/test_durations.py: the comparison that shows no test got more than 20% slower (issue 10)."""

from __future__ import annotations

from pathlib import Path

from tools.test_durations import durations, main, median_durations


def _log(path: Path, rows: dict[str, tuple[float, float]]) -> Path:
    path.write_text("==== slowest durations ====\n" + "".join(
        f"{call:.2f}s call     {test}\n{setup:.2f}s setup    {test}\n" for test, (call, setup) in rows.items()))
    return path


def test_a_test_time_is_setup_plus_call_and_the_median_over_logs(tmp_path: Path) -> None:
    a = _log(tmp_path / "a.log", {"t::x": (2.0, 0.5)})
    b = _log(tmp_path / "b.log", {"t::x": (4.0, 0.5)})
    c = _log(tmp_path / "c.log", {"t::x": (3.0, 0.5)})
    assert durations(a) == {"t::x": 2.5}
    assert median_durations([a, b, c]) == {"t::x": 3.5}


def test_a_test_slower_by_more_than_the_limit_fails_the_comparison(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    before = _log(tmp_path / "before.log", {"t::slow": (5.0, 0.0), "t::same": (5.0, 0.0), "t::tiny": (0.2, 0.0)})
    after = _log(tmp_path / "after.log", {"t::slow": (6.5, 0.0), "t::same": (5.5, 0.0), "t::tiny": (0.5, 0.0)})
    assert main([str(before), str(after)]) == 1
    out = capsys.readouterr().out
    assert "SLOWER  t::slow" in out and "SLOWER  t::same" not in out
    assert "SLOWER  t::tiny" not in out  # x2.5, but 0.3 s is start-up jitter, not a regression
    assert "1 slower than x1.2" in out
    assert main([str(before), str(before)]) == 0
