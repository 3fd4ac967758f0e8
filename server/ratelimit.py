"""Per-client limits: how many events (task creations, wrong passwords) one client
address may cause in a sliding time window, and how many uploads it may have in
progress at once.

State lives in the HTTP process's memory (one :class:`SlidingWindow` per limit, held
by the service); a restart forgets it, which costs an attacker nothing it could not
get by waiting out the window. The number of addresses remembered is capped, so a
flood of spoofed-looking sources cannot grow it without bound: when full, addresses
whose events have all expired go first, then the least recently seen.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class SlidingWindow:
    """At most ``allowed`` events per key in any ``window`` seconds."""

    def __init__(
        self,
        allowed: int,
        window: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.allowed = allowed
        self.window = window
        self._max_keys = max_keys
        self._clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may act again, or None if it may act now."""
        events = self._recent(key)
        if events is None or len(events) < self.allowed:
            return None
        return max(0.0, events[0] + self.window - self._clock())

    def record(self, key: str) -> None:
        events = self._recent(key)
        if events is None:
            if len(self._events) >= self._max_keys:
                self._make_room()
            events = self._events[key] = deque()
        events.append(self._clock())
        self._events.move_to_end(key)
        while len(events) > self.allowed:
            events.popleft()

    def _recent(self, key: str) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        cutoff = self._clock() - self.window
        while events and events[0] <= cutoff:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def _make_room(self) -> None:
        cutoff = self._clock() - self.window
        for key in [k for k, events in self._events.items() if events[-1] <= cutoff]:
            del self._events[key]
        while len(self._events) >= self._max_keys:
            self._events.popitem(last=False)


class ConcurrencyLimit:
    """At most ``allowed`` operations in progress per key (uploads per client address)."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self._running: dict[str, int] = {}

    def full(self, key: str) -> bool:
        return self._running.get(key, 0) >= self.allowed

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        self._running[key] = self._running.get(key, 0) + 1
        try:
            yield
        finally:
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
