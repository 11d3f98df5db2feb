"""The lab's network defaults, apart from toolkit.lab so that the CLI's help needs none of it."""

from __future__ import annotations

DEFAULT_NETWORK = "toolkit-lab"
DEFAULT_SUBNET = "10.213.77.0/24"
