"""Eta: the time of each long step and the time left, from the mean so far."""

from __future__ import annotations

from opticam_rt.progress import Eta, format_seconds


def test_eta_from_the_mean_step_time():
    times = iter([0.0, 10.0, 30.0, 36.0])
    eta = Eta(3, clock=lambda: next(times))
    assert eta.step() == "1/3, 10.0 s, ~20.0 s left"  # 10 s per step so far, 2 to go
    assert eta.step() == "2/3, 20.0 s, ~15.0 s left"  # 15 s per step, 1 to go
    assert eta.step() == "3/3, 6.0 s, 36.0 s in all"


def test_format_seconds():
    assert format_seconds(5.04) == "5.0 s"
    assert format_seconds(245) == "4 min 05 s"
    assert format_seconds(3720) == "1 h 02 min"
