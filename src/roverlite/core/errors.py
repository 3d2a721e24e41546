"""The config error type and the did-you-mean helper, shared by every layer's messages."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

__all__ = ["ConfigError", "did_you_mean"]


class ConfigError(ValueError):
    """A configuration value or key is not valid."""


def did_you_mean(name: str, options: Sequence[str]) -> str:
    """Return ' Did you mean "x"?' for the closest option, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return f' Did you mean "{close[0]}"?' if close else ""
