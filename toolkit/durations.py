"""How long a shell lives, as users write it: hours (fractions too, `--hours 1.5`) or a duration
with units (`--for 30m`, `2h30m`, `1d`). Kept as an exact number of hours, checked against the
cluster's limits, and written back the same way."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from fractions import Fraction

from toolkit.errors import BadInputError

MINIMUM = Fraction(5, 60)  # five minutes: a shorter shell would be reaped before anyone logs in
_HOURS = re.compile(r"\d{1,32}(\.\d{1,6})?", re.ASCII)
_UNITS = re.compile(r"(?:(\d{1,32})d)?(?:(\d{1,32})h)?(?:(\d{1,32})m)?", re.ASCII)


def hours(text: str, option: str = "--hours") -> Fraction:
    """'8', '1.5' -> hours; a one-line error for anything else."""
    if not _HOURS.fullmatch(text):
        raise BadInputError(f"{option} {text!r} is not a number of hours (examples: 8, 1.5)")
    return Fraction(text)


def duration(text: str, option: str = "--for") -> Fraction:
    """'30m', '2h30m', '1d' -> hours; a one-line error for anything else."""
    match = _UNITS.fullmatch(text)
    if not text or match is None:
        raise BadInputError(f"{option} {text!r} is not a duration (examples: 30m, 2h30m, 1d)")
    days, whole_hours, minutes = (int(part or 0) for part in match.groups())
    return days * 24 + whole_hours + Fraction(minutes, 60)


def refusal(length: Fraction, max_hours: int, option: str = "--hours/--for") -> str | None:
    """Why `length` hours is refused on this cluster, or None."""
    if MINIMUM <= length <= max_hours:
        return None
    return (
        f"{option} must be between 5 minutes and {max_hours} hours (this cluster's maximum), "
        f"not {text(length, up=length > max_hours)}"
    )


def as_timedelta(length: Fraction) -> timedelta:
    """Whole seconds: expiries are written to the second. Only for lengths already checked."""
    return timedelta(seconds=int(length * 3600))


def text(length: Fraction, up: bool = False) -> str:
    """Hours as 2h30m, 45m, 8h; whole minutes, rounded down (or `up`)."""
    whole, rest = divmod(math.ceil(length * 60) if up else int(length * 60), 60)
    return (f"{whole}h" if whole else "") + (f"{rest}m" if rest else "") or "0m"
