"""A revision's request counts from its LB slot's counters: baseline, LB restart, cleared counters."""

from __future__ import annotations

from flightdeck.deploy.haproxy import COUNTERS
from flightdeck.deploy.local import slot_counts


def _c(**kw: int) -> dict[str, int]:
    return {k: kw.get(k, 0) for k in COUNTERS}


BOOK = {"container": "c2", "lb": "100@1700", "base": _c(hrsp_2xx=2474, hrsp_5xx=4, wretr=570), "carried": _c()}


def test_a_new_occupant_is_counted_from_its_baseline_not_from_the_slots_earlier_occupants():
    now = _c(hrsp_2xx=2474 + 30, hrsp_5xx=4, wretr=570)
    assert slot_counts(BOOK, now, "100@1700") == _c(hrsp_2xx=30)


def test_an_lb_restart_counts_from_zero_again_never_negative():
    # counters below the baseline: the LB restarted (or they were cleared) since the baseline
    assert slot_counts(BOOK, _c(hrsp_2xx=5), "100@1700") == _c(hrsp_2xx=5)
    # a new HAProxy process that already counted past the old baseline: the instance tells
    assert slot_counts(BOOK, _c(hrsp_2xx=3000, hrsp_5xx=1), "200@1800") == _c(hrsp_2xx=3000, hrsp_5xx=1)


def test_counts_saved_before_a_stop_carry_over_the_restart():
    saved = {**BOOK, "carried": _c(hrsp_2xx=30, hrsp_5xx=2), "base": _c(hrsp_2xx=2504, hrsp_5xx=6, wretr=570)}
    assert slot_counts(saved, _c(), "") == _c(hrsp_2xx=30, hrsp_5xx=2)  # HAProxy down: what was saved
    assert slot_counts(saved, _c(hrsp_2xx=7), "200@1800") == _c(hrsp_2xx=37, hrsp_5xx=2)  # restarted
    # the stop did not happen after all (same process): nothing is counted twice
    assert slot_counts(saved, _c(hrsp_2xx=2510, hrsp_5xx=6, wretr=570), "100@1700") == _c(hrsp_2xx=36, hrsp_5xx=2)


def test_no_baseline_means_the_slots_raw_counters():
    assert slot_counts(None, _c(hrsp_2xx=9, wretr=1), "100@1700") == _c(hrsp_2xx=9, wretr=1)
    assert slot_counts(None, {}, "") == _c()
