"""Uploads in flight in this process, and the disk space they have reserved.

Each upload takes a :class:`Reservation` when it starts and gives it back when it
ends, admitted or refused. While it lasts, the reservation holds the bytes the
upload is about to write: its Content-Length at first (the packed size is all that
is known), then each member's size as its header arrives. The free-space check of
every upload subtracts what the *others* have reserved, so concurrent uploads
cannot fill the disk together, and the queue cap counts the uploads in flight.

Uploads unpack in threads, so the ledger takes a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Reservation:
    def __init__(self, ledger: UploadLedger, size: int) -> None:
        self._ledger = ledger
        self.size = size

    def resize(self, size: int) -> None:
        with self._ledger.lock:
            self.size = size

    def reserved_by_others(self) -> int:
        with self._ledger.lock:
            return sum(r.size for r in self._ledger.open if r is not self)


class UploadLedger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: list[Reservation] = []

    @property
    def in_flight(self) -> int:
        with self.lock:
            return len(self.open)

    @contextmanager
    def reserve(self, size: int) -> Iterator[Reservation]:
        reservation = Reservation(self, size)
        with self.lock:
            self.open.append(reservation)
        try:
            yield reservation
        finally:
            with self.lock:
                self.open.remove(reservation)
