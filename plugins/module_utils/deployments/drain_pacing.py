# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""When each host of a batch leaves its load balancers: at the pace the controller can take hosts through the batch.

A batch's hosts all drain at once, but the controller has work to do for each host: its word (the command that tells
it to go on with its main group, ApplicationStop to ValidateService) to set up and send, its result to read, its
registration and its record. At 100 hosts half at a time on two cores, the word reached the fiftieth host 7 s after
the drain had ended, and that host was out of service all that while, serving nobody. So when the controller cannot
take a whole batch through within one drain, the batch's hosts leave a few at a time: each host's word is set up
while it drains and sent as its drain ends, and hosts leave at the pace the controller gets their words ready. Each
host is then out of service for its own drain, its hooks and its registration. The batch takes as long as before
(the drain, the controller's work for its hosts, the hooks), and fewer of its hosts are out at once, so the minimum
of healthy hosts only gains.

The pace is at most START_PACE_PER_CORE hosts per second per controller core (the controller's whole work per host,
measured), and lower when the words get ready more slowly than that: in the batch before, then in the batch itself.
Only the load balancer's drain is known beforehand (ELBv2's deregistration delay); where it is not (a classic ELB or
HAProxy drains until the last connection ends), the batch leaves at once, as without pacing.
"""

from __future__ import annotations

import math
from typing import Optional

# At most one deregistration per this long: hosts freed meanwhile leave together, in one call per target group.
DEREGISTER_EVERY = 0.5
# Reaches counted before a call's pace is taken as the controller's (the first few reach together: the calls
# prepare a few at a time).
MIN_REACHES = 8
# The pace a batch starts with when nothing was measured before it, and the most it goes to, per controller core.
# Words set up ahead get ready faster than this, but each host's result, registration and record that follow are
# the controller's work too, and taking hosts out faster only queued them there. Measured at 100 hosts half at a
# time on two cores (50 hosts a batch): at 4 per core the median host was 0.5 to 0.8 s over its own bound (drain,
# registration and its own hooks) and 27 to 49 of 100 stayed within 0.5 s of it; at 2 per core, 0.14 to 0.21 s and
# 97 to 100 of 100, the rollout 3 to 7 s longer. The batch's own words then lower it when they get ready more
# slowly, weighed against this many at the start pace.
START_PACE_PER_CORE = 2.0
START_WEIGHT = 8
# Hosts leave at this share of the measured pace: a host taken out early waits for its word, out of service, while
# one taken out late only makes the controller wait (the pace slows as more hosts run their hooks).
PACE_MARGIN = 0.8


class ReachRate:
    """Hosts per second the controller's calls got ready to reach their hosts (set up, or sent), counted over the
    time some call was still on its way."""

    def __init__(self) -> None:
        self.busy = 0.0
        self.count = 0
        self.waiting = 0
        self._since: Optional[float] = None

    def _tick(self, now: float) -> None:
        if self.waiting > 0 and self._since is not None:
            self.busy += max(0.0, now - self._since)
        self._since = now

    def sent(self, count: int, now: float) -> None:
        self._tick(now)
        self.waiting += count

    def reached(self, now: float) -> None:
        self._tick(now)
        self.waiting = max(0, self.waiting - 1)
        self.count += 1

    def per_second(self) -> Optional[float]:
        return self.count / self.busy if self.count >= MIN_REACHES and self.busy > 0 else None


class DrainPacer:
    """Which hosts of a batch leave now. ``take`` returns the next hosts to deregister (in the batch's order) while
    fewer than ``depth`` hosts are out without their word; ``reached`` and ``done`` say a host no longer waits."""

    def __init__(self, hosts: list[str], drain_seconds: Optional[float], rate: ReachRate,
                 start_rate: Optional[float] = None, ceiling: Optional[float] = None) -> None:
        self.hosts = list(hosts)
        self.waiting = list(hosts)  # not deregistered yet
        self.out: set[str] = set()  # deregistered, the word not yet ready
        self.drain_seconds = drain_seconds
        self.rate = rate
        self.start_rate = start_rate
        self.ceiling = ceiling
        self._last_take: Optional[float] = None

    def pace(self) -> Optional[float]:
        """The start pace, corrected by the batch's own words as they get ready; never above the ceiling."""
        start = self.start_rate
        if not start or start <= 0:
            pace = self.rate.per_second()
        else:
            pace = (self.rate.count + START_WEIGHT) / (self.rate.busy + START_WEIGHT / start)
        return min(pace, self.ceiling) if pace and self.ceiling else pace

    def _leaving_pace(self) -> Optional[float]:
        pace = self.pace()
        return None if not pace or pace <= 0 else pace * PACE_MARGIN

    def depth(self) -> int:
        """How many hosts may be out without their word: as many as the controller reaches in one drain; the whole
        batch when the drain or the pace is not known."""
        pace = self._leaving_pace()
        if not pace or not self.drain_seconds:
            return len(self.hosts)
        return max(1, math.ceil(pace * self.drain_seconds))

    def paced(self) -> bool:
        """Whether the batch leaves in more than one go (as far as is known now)."""
        return self.depth() < len(self.hosts)

    def _room(self) -> int:
        room = min(len(self.waiting), self.depth() - len(self.out))
        pace = self._leaving_pace()
        if pace and self.paced():
            # Leaving at the pace the words will go, not in one wave of ``depth``: the last host of a wave would
            # wait for the words to the hosts before it.
            room = min(room, max(1, math.ceil(pace * DEREGISTER_EVERY)))
        return room

    def take(self, now: float) -> list[str]:
        room = self._room()
        if room <= 0 or (self._last_take is not None and now - self._last_take < DEREGISTER_EVERY):
            return []
        taken, self.waiting = self.waiting[:room], self.waiting[room:]
        self.out.update(taken)
        self._last_take = now
        return taken

    def next_take(self, now: float) -> Optional[float]:
        """Seconds until ``take`` can return hosts, or None until a host is reached (or done)."""
        if self._room() <= 0:
            return None
        return 0.0 if self._last_take is None else max(0.0, self._last_take + DEREGISTER_EVERY - now)

    def sent(self, hosts: list[str], now: float) -> None:
        self.rate.sent(len(hosts), now)

    def reached(self, host: str, now: float) -> None:
        self.out.discard(host)
        self.rate.reached(now)

    def done(self, hosts: list[str]) -> None:
        """``hosts`` no longer wait for a word: their call ended, or they failed to drain."""
        self.out.difference_update(hosts)


def pace_ceiling(cores: Optional[int]) -> float:
    """The most hosts per second a batch takes through: START_PACE_PER_CORE per controller core."""
    return START_PACE_PER_CORE * max(1, cores or 1)


def start_pace(carried: object, cores: Optional[int]) -> float:
    """The pace a batch starts with: the one the batch before measured (read back from the deployment's state:
    anything but a positive finite number is ignored), at most the ceiling, else the ceiling. Not the
    BeforeBlockTraffic word's: it reaches hosts that are idle, 39 hosts/s in the measurement above against 6 for the
    main group's words."""
    if isinstance(carried, (int, float)) and not isinstance(carried, bool) and math.isfinite(carried) and carried > 0:
        return min(float(carried), pace_ceiling(cores))
    return pace_ceiling(cores)
