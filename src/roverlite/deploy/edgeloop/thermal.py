"""Temperature and throttling: ``vcgencmd`` on a Raspberry Pi, ``/sys/class/thermal`` elsewhere.

``vcgencmd get_throttled`` prints ``throttled=0x50005``; its bits (Raspberry Pi firmware):

====  ========================================  =====================================
bit   meaning                                    what to do
====  ========================================  =====================================
0     under-voltage detected (now)               better supply / cable (5 V 3 A Pi 4, 5 A Pi 5)
1     ARM frequency capped (now)                 cooling
2     currently throttled                        cooling; latencies measured now are not representative
3     soft temperature limit active (now)        cooling
16    under-voltage has occurred since boot
17    ARM frequency capping has occurred
18    throttling has occurred
19    soft temperature limit has occurred
====  ========================================  =====================================

A monitor is polled by the loop; it runs its command at most every ``every_s`` seconds, logs a
warning when a "now" bit is set or a new "has occurred" bit appears, and keeps the hottest
temperature and every flag seen for the run's summary.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "THROTTLE_BITS",
    "SysfsThermalMonitor",
    "VcgencmdMonitor",
    "decode_throttled",
    "parse_measure_temp",
    "parse_throttled",
]

logger = logging.getLogger(__name__)

THROTTLE_BITS = {
    0: "under-voltage detected",
    1: "arm frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
    16: "under-voltage has occurred",
    17: "arm frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
_NOW_MASK = 0xF
_COMMAND_TIMEOUT_S = 5.0


def parse_throttled(text: str) -> int:
    """The bit field of ``vcgencmd get_throttled`` output (``throttled=0x50005``).

    Raises:
        ValueError: text without a ``throttled=`` value.
    """
    match = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if match is None:
        raise ValueError(f"Expected vcgencmd get_throttled output like 'throttled=0x0'. Received: {text.strip()!r}.")
    return int(match.group(1), 0)


def decode_throttled(value: int) -> list[str]:
    """The meanings of the bits set in ``value``, lowest bit first (unknown bits as ``bit N``)."""
    return [THROTTLE_BITS.get(bit, f"bit {bit}") for bit in range(value.bit_length()) if value >> bit & 1]


def parse_measure_temp(text: str) -> float:
    """Degrees Celsius from ``vcgencmd measure_temp`` output (``temp=48.3'C``).

    Raises:
        ValueError: text without a ``temp=`` value.
    """
    match = re.search(r"temp=([-\d.]+)", text)
    if match is None:
        raise ValueError(f'Expected vcgencmd measure_temp output like "temp=48.3\'C". Received: {text.strip()!r}.')
    return float(match.group(1))


class VcgencmdMonitor:
    """Polls ``vcgencmd get_throttled`` and ``measure_temp`` (Raspberry Pi)."""

    source = "vcgencmd"

    def __init__(
        self, every_s: float = 10.0, command: str = "vcgencmd", run: Callable[..., Any] = subprocess.run
    ) -> None:
        self.every_s, self.command, self._run = every_s, command, run
        self._next = 0.0
        self.max_temp_c: float | None = None
        self.last_temp_c: float | None = None
        self.seen = 0
        self.last = 0
        self.errors = 0

    @classmethod
    def if_available(cls, every_s: float = 10.0) -> VcgencmdMonitor | None:
        """A monitor when ``vcgencmd`` is on PATH (every Raspberry Pi OS image has it), else None."""
        return cls(every_s) if shutil.which("vcgencmd") else None

    def poll(self, now: float | None = None) -> dict[str, Any] | None:
        """Read the state when due; returns it (or None when not due or unreadable)."""
        now = time.monotonic() if now is None else now
        if now < self._next:
            return None
        self._next = now + self.every_s
        try:
            value = parse_throttled(self._vcgencmd("get_throttled"))
            temp = parse_measure_temp(self._vcgencmd("measure_temp"))
        except (OSError, ValueError, subprocess.SubprocessError) as err:
            self.errors += 1
            if self.errors == 1:
                logger.warning("vcgencmd unreadable (%s); thermal state not logged", err)
            return None
        new_sticky = value & ~self.seen & ~_NOW_MASK
        if value & _NOW_MASK or new_sticky:
            logger.warning("THROTTLING %.1f C throttled=0x%x: %s", temp, value, ", ".join(decode_throttled(value)))
        self.seen |= value
        self.last = value
        self.last_temp_c = temp
        self.max_temp_c = temp if self.max_temp_c is None else max(self.max_temp_c, temp)
        return {"temp_c": temp, "throttled": f"0x{value:x}", "flags": decode_throttled(value)}

    def status(self) -> str:
        if self.last_temp_c is None:
            return ""
        return f" temp={self.last_temp_c:.1f}C throttled=0x{self.last:x}"

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "max_temp_c": self.max_temp_c,
            "throttled_seen": f"0x{self.seen:x}",
            "flags_seen": decode_throttled(self.seen),
            "read_errors": self.errors,
        }

    def _vcgencmd(self, what: str) -> str:
        done = self._run([self.command, what], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=True)
        return done.stdout


class SysfsThermalMonitor:
    """Polls ``/sys/class/thermal/thermal_zone*/temp`` (Jetson and most Linux boards); logs the hottest zone."""

    source = "sysfs"

    def __init__(self, every_s: float = 10.0, root: str = "/sys/class/thermal", warn_c: float = 80.0) -> None:
        self.every_s, self.warn_c = every_s, warn_c
        self.zones = sorted(Path(root).glob("thermal_zone*"))
        self._next = 0.0
        self.max_temp_c: float | None = None
        self.hottest: str | None = None
        self.last_temp_c: float | None = None

    @classmethod
    def if_available(cls, every_s: float = 10.0) -> SysfsThermalMonitor | None:
        monitor = cls(every_s)
        return monitor if monitor.zones else None

    def poll(self, now: float | None = None) -> dict[str, Any] | None:
        now = time.monotonic() if now is None else now
        if now < self._next:
            return None
        self._next = now + self.every_s
        readings = {}
        for zone in self.zones:
            try:
                name = (zone / "type").read_text().strip()
                readings[name] = int((zone / "temp").read_text().strip()) / 1000.0
            except (OSError, ValueError):
                continue
        if not readings:
            return None
        name, temp = max(readings.items(), key=lambda item: item[1])
        if temp >= self.warn_c:
            logger.warning("HOT %s %.1f C (>= %.0f C): expect clock throttling", name, temp, self.warn_c)
        self.last_temp_c = temp
        if self.max_temp_c is None or temp > self.max_temp_c:
            self.max_temp_c, self.hottest = temp, name
        return {"temp_c": temp, "zone": name}

    def status(self) -> str:
        return "" if self.last_temp_c is None else f" temp={self.last_temp_c:.1f}C"

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "max_temp_c": self.max_temp_c, "hottest_zone": self.hottest}
