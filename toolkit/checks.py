"""One check's result, as `toolkit doctor` and `toolkit cluster verify` report them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"  # works, but worth the operator's look
    FAIL = "fail"
    SKIP = "skip"  # could not run here; the detail says why


# How the commands colour each status (rich markup).
STYLE = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "yellow"}


@dataclass(frozen=True)
class Check:
    check: str  # what was checked
    host: str  # where, or "-" for the cluster as a whole
    status: Status
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == Status.FAIL
