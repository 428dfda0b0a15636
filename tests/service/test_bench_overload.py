"""``python -m service.bench.overload``'s goodput: 200s finished inside the steady-state window, per second of it."""

from __future__ import annotations

import pytest

from service.bench.overload import goodput


def test_goodput_counts_answers_200_finished_inside_the_window() -> None:
    # (status, latency, sent): finished at 1.5 (before the window), 6, 9.5, 12 (after it); a 503 at 7
    answers = [(200, 1.0, 0.5), (200, 2.0, 4.0), (200, 1.5, 8.0), (200, 3.0, 9.0), (503, 0.01, 7.0)]
    assert goodput(answers, 5.0, 10.0) == pytest.approx(2 / 5)
    assert goodput(answers, 0.0, 10.0) == pytest.approx(3 / 10)
