"""Kubernetes resource quantities ("24", "500m", "256Gi") as exact fractions, and back."""

from __future__ import annotations

import re
from fractions import Fraction

from toolkit.errors import BadInputError

_SCALE = {
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
}
_PATTERN = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi|)\s*$")


def parse(text: str, what: str = "quantity") -> Fraction:
    """'1.5', '500m', '256Gi' -> an exact value; a one-line error for anything else."""
    match = _PATTERN.match(str(text))
    if not match:
        raise BadInputError(f"{what} {text!r} is not a Kubernetes quantity (examples: 24, 500m, 256Gi)")
    return Fraction(match.group(1)) * _SCALE[match.group(2)]


def cpu(value: Fraction) -> str:
    """CPU cores in millicores when not whole: 21.6 -> '21600m'."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{int(value * 1000)}m"


def memory(value: Fraction) -> str:
    """Bytes as Mi, rounded down: 230.4 GiB -> '235929Mi'."""
    return f"{int(value / 2**20)}Mi"


def human_bytes(value: Fraction) -> str:
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20)):
        if value >= size:
            amount = value / size
            # Fraction has no format spec before Python 3.12: whole amounts go through int.
            return f"{int(amount)}{unit}" if amount.denominator == 1 else f"{float(amount):.1f}{unit}"
    return f"{int(value)}"
