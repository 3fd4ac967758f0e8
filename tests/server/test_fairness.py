"""Fairness: limits are per client address, so one client's abuse never locks out
another; X-Forwarded-For counts only when a configured trusted proxy sent it.

Clients come from different loopback addresses (127.0.0.2, 127.0.0.3...), over real
sockets to the real server.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from retracer.server.clients import client_address, trusted_networks
from retracer.server.config import Config
from retracer.server.ratelimit import SlidingWindow
from testing.server.archives import PROBLEM, abrt_archive, elf_core, regular, tar
from testing.server.live import Served
from tests.server.client import XZ_TAR

OWNER = "127.0.0.1"
STRANGER = "127.0.0.2"
PROXY = "127.0.0.3"


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    headers: dict[str, str]


def request(
    url: str, source: str, method: str, path: str, body: bytes | None = None, **headers: str
) -> Answer:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.read().decode(), dict(response.getheaders()))
    finally:
        connection.close()


def create(url: str, source: str, **headers: str) -> Answer:
    return request(url, source, "POST", "/create", abrt_archive(), **{
        "Content-Type": XZ_TAR, **headers})  # fmt: skip


def poll(url: str, source: str, task_id: str, password: str, **headers: str) -> Answer:
    return request(url, source, "GET", f"/{task_id}", **{"X-Task-Password": password, **headers})


@pytest.fixture
def limited(serve: Callable[[Config], Served], server_config: Callable[..., Config]) -> Served:
    return serve(
        server_config(
            protocol_profile="abrt",
            creates_per_client=3,
            password_failures_allowed=3,
            trusted_proxies=[PROXY],
        )
    )


def test_a_strangers_wrong_passwords_never_lock_the_owner_out(limited: Served) -> None:
    created = create(limited.url, OWNER)
    task_id, password = created.headers["X-Task-Id"], created.headers["X-Task-Password"]
    guesses = [poll(limited.url, STRANGER, task_id, f"guess-{n}").status for n in range(3)]
    assert guesses == [403, 403, 403]
    locked = poll(limited.url, STRANGER, task_id, password)  # even with the right one
    assert locked.status == 429
    assert locked.text == (
        "Too many wrong passwords or unknown task ids from this address; try again in 600 s.\n"
    )
    assert locked.headers["Retry-After"] == "600"
    # The owner, from another address, is not affected at all.
    assert poll(limited.url, OWNER, task_id, password).status == 200
    # Nor does the stranger get around it by naming another client in X-Forwarded-For.
    spoofed = poll(limited.url, STRANGER, task_id, password, **{"X-Forwarded-For": "10.9.9.9"})
    assert spoofed.status == 429


def test_hunting_for_task_ids_counts_as_failures(limited: Served) -> None:
    answers = [poll(limited.url, STRANGER, str(100_000_000 + n), "x") for n in range(4)]
    assert [a.status for a in answers] == [404, 404, 404, 429]
    assert answers[0].text == "There is no task '100000000' on this server.\n"


def test_create_is_limited_per_client_address(limited: Served) -> None:
    assert [create(limited.url, STRANGER).status for _ in range(3)] == [201, 201, 201]
    refused = create(limited.url, STRANGER)
    assert refused.status == 429
    assert refused.text == (
        "This address created 3 tasks in the last 60 s, the most allowed; try again in 60 s.\n"
    )
    assert refused.headers["Retry-After"] == "60"
    assert create(limited.url, OWNER).status == 201


def test_uploads_in_progress_are_limited_per_client_address(
    serve: Callable[[Config], Served], server_config: Callable[..., Config]
) -> None:
    served = serve(server_config(uploads_per_client=1))
    body = tar(regular({**PROBLEM, "coredump": elf_core(size=1 << 20)}))
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), 10, (STRANGER, 0)) as slow:
        slow.sendall(
            f"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: {XZ_TAR}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:4096]
        )
        incoming = server_config().data_dir / "spool" / "incoming"
        deadline = time.monotonic() + 10
        while not any(incoming.iterdir()):  # the slow upload is being unpacked
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = create(served.url, STRANGER)
        assert (refused.status, refused.text) == (
            429,
            "This address already has 1 uploads in progress, the most allowed;"
            " wait for one to finish.\n",
        )
        assert create(served.url, OWNER).status == 201
        slow.sendall(body[4096:])
        assert slow.recv(4096).startswith(b"HTTP/1.1 201 ")
    assert create(served.url, STRANGER).status == 201


def test_forwarded_for_counts_only_from_a_trusted_proxy(limited: Served) -> None:
    # Behind the trusted proxy, two clients named in X-Forwarded-For are two clients.
    for _ in range(3):
        assert create(limited.url, PROXY, **{"X-Forwarded-For": "10.0.0.1"}).status == 201
    assert create(limited.url, PROXY, **{"X-Forwarded-For": "10.0.0.1"}).status == 429
    assert create(limited.url, PROXY, **{"X-Forwarded-For": "10.0.0.2"}).status == 201
    # A client cannot pose as another by prepending to the header the proxy extends.
    forged = {"X-Forwarded-For": "10.0.0.2, 10.0.0.1"}
    assert create(limited.url, PROXY, **forged).status == 429
    # From an untrusted peer the header means nothing: all of these are the stranger.
    names = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]
    statuses = [create(limited.url, STRANGER, **{"X-Forwarded-For": n}).status for n in names]
    assert statuses == [201, 201, 201, 429]


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("192.0.2.7", None, "192.0.2.7"),
        ("192.0.2.7", "198.51.100.1", "192.0.2.7"),  # not a proxy of ours: ignored
        ("10.0.0.5", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.5", "203.0.113.9, 198.51.100.1", "198.51.100.1"),  # rightmost untrusted
        ("10.0.0.5", "198.51.100.1, 10.0.0.6", "198.51.100.1"),  # through two proxies
        ("10.0.0.5", "not-an-address", "10.0.0.5"),
        ("10.0.0.5", "2001:DB8::1", "2001:db8::1"),
    ],
)
def test_client_address(peer: str, forwarded: str | None, client: str) -> None:
    assert client_address(peer, forwarded, trusted_networks(["10.0.0.0/8"])) == client


def test_sliding_window_forgets_old_events_and_caps_its_memory() -> None:
    now = [0.0]
    window = SlidingWindow(2, 10.0, max_keys=3, clock=lambda: now[0])
    window.record("a")
    window.record("a")
    assert window.retry_after("a") == 10.0
    now[0] = 5.0
    assert window.retry_after("a") == 5.0
    now[0] = 10.0
    assert window.retry_after("a") is None
    for key in ("b", "c", "d", "e"):
        window.record(key)
    assert len(window._events) <= 3
