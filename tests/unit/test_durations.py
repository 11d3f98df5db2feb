"""Shell lifetimes as users write them, and the time left as `shell list` shows it."""

from __future__ import annotations

from fractions import Fraction

import pytest

from toolkit import durations
from toolkit.cli.present import remaining
from toolkit.errors import BadInputError


@pytest.mark.parametrize(
    ("text", "hours"),
    [("8", Fraction(8)), ("1.5", Fraction(3, 2)), ("0.25", Fraction(1, 4)), ("168", Fraction(168))],
)
def test_hours_take_fractions(text: str, hours: Fraction) -> None:
    assert durations.hours(text) == hours


@pytest.mark.parametrize(
    ("text", "hours"),
    [("30m", Fraction(1, 2)), ("2h30m", Fraction(5, 2)), ("1d", Fraction(24)), ("1d2h5m", Fraction(313, 12))],
)
def test_durations_take_days_hours_and_minutes(text: str, hours: Fraction) -> None:
    assert durations.duration(text) == hours
    assert durations.duration(durations.text(hours)) == hours  # written back the way it is read


@pytest.mark.parametrize("text", ["", "abc", "-3", "1e3", "1.5.2", "inf", "nan", " 8", "8 ", "1" * 33])
def test_what_is_not_a_number_of_hours_is_one_line(text: str) -> None:
    with pytest.raises(BadInputError, match=r"^--hours '.*' is not a number of hours \(examples: 8, 1\.5\)$"):
        durations.hours(text)


@pytest.mark.parametrize("text", ["", "2", "1.5h", "1h1h", "30s", "m", "2h 30m", "-1h"])
def test_what_is_not_a_duration_is_one_line(text: str) -> None:
    with pytest.raises(BadInputError, match=r"is not a duration \(examples: 30m, 2h30m, 1d\)$"):
        durations.duration(text)


@pytest.mark.parametrize(
    ("hours", "refused"),
    [(Fraction(4, 60), True), (Fraction(5, 60), False), (Fraction(168), False), (Fraction(1681, 10), True)],
)
def test_lifetimes_between_five_minutes_and_the_clusters_maximum(hours: Fraction, refused: bool) -> None:
    reason = durations.refusal(hours, 168)
    assert (reason is not None) == refused
    if reason:
        assert reason.startswith("--hours/--for must be between 5 minutes and 168 hours")


def test_a_huge_number_of_days_is_refused_without_overflowing() -> None:
    huge = durations.duration("9" * 32 + "d")
    assert durations.refusal(huge, 168) is not None


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (8 * 3600 - 0.5, "8h"),  # a fresh 8-hour shell is not rounded down to 7h
        (7 * 3600 + 1800, "7h 30m"),
        (45 * 60, "45m"),
        (1, "1m"),
        (2 * 86400 + 3 * 3600 + 300, "2d 3h"),
        (86400, "1d"),
    ],
)
def test_the_time_left_reads_in_its_two_largest_units_rounded_up(seconds: float, shown: str) -> None:
    assert remaining(seconds) == shown


def test_other_scripts_digits_are_not_hours_and_a_refusal_never_rounds_into_the_limit() -> None:
    with pytest.raises(BadInputError):
        durations.hours("٣")
    reason = durations.refusal(durations.hours("168.000001"), 168)
    assert reason is not None and reason.endswith("not 168h1m")
