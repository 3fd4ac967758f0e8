"""Uploads: hostile archives are refused with one clear sentence and leave nothing behind."""

from __future__ import annotations

import http.client
import os
import random
import socket
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from retracer.server.config import Config
from testing.server.archives import (
    PROBLEM,
    Member,
    abrt_archive,
    elf_core,
    gz,
    regular,
    tar,
    xz,
)
from testing.server.hostile import ESCAPED, HOSTILE, member
from testing.server.live import Served, ServeFactory, settings_mapping
from tests.server.client import XZ_TAR, upload


def pax_header_bomb() -> bytes:
    """A pax header tarfile would read into memory whole: 1 MiB here, gigabytes in an attack."""
    info = tarfile.TarInfo("coredump")
    info.size = 4
    info.pax_headers = {"comment": "x" * (1 << 20)}
    return xz(info.tobuf(tarfile.PAX_FORMAT) + b"core".ljust(512, b"\0") + bytes(1024))


@pytest.fixture
def small_server(serve: Callable[[Config], Served], server_config: Callable[..., Config]) -> Served:
    return serve(server_config(max_unpacked_size_mib=8))


def leftovers(data_dir: Path) -> list[str]:
    spool = data_dir / "spool"
    return sorted(str(p.relative_to(spool)) for p in spool.rglob("*") if p.parent != spool)


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_is_refused_and_leaves_nothing(
    small_server: Served, server_config: Callable[..., Config], case: str
) -> None:
    body, code, message = HOSTILE[case]
    response = upload(small_server.url, body)
    assert (response.status_code, response.text) == (code, message)
    assert leftovers(server_config().data_dir) == []
    assert not os.path.exists(ESCAPED)
    assert not (server_config().data_dir.parent / "escaped").exists()
    # ...and the server keeps serving.
    assert upload(small_server.url, abrt_archive()).status_code == 201


def test_oversize_extended_header_is_refused(small_server: Served) -> None:
    response = upload(small_server.url, pax_header_bomb())
    assert response.status_code == 403
    assert response.text == member("'././@PaxHeader' has an extended header larger than 64 KiB")


@pytest.mark.parametrize(
    ("label", "body"),
    [
        ("application/x-tar", gz(tar(regular()))),  # a known client's gzip, mislabelled
        ("application/x-xz-compressed-tar", tar(regular())),  # plain tar, mislabelled
        ("application/gzip", gz(tar(regular()))),
        ("application/x-xz", abrt_archive()),
        ("application/x-gzip", xz(tar(regular(), format=tarfile.PAX_FORMAT))),
    ],
)
def test_real_compression_is_sniffed_whatever_the_label(
    served: Served, server_config: Callable[..., Config], label: str, body: bytes
) -> None:
    response = upload(served.url, body, content_type=label)
    assert response.status_code == 201, response.text
    crash = server_config().data_dir / "spool" / "tasks" / response.headers["X-Task-Id"] / "crash"
    assert {p.name: p.read_bytes() for p in crash.iterdir()} == PROBLEM
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in crash.iterdir()}
    assert modes == {name: "0o644" if name == "coredump" else "0o600" for name in PROBLEM}
    assert oct(crash.stat().st_mode & 0o777) == oct(crash.parent.stat().st_mode & 0o777) == "0o700"


def test_optional_members_are_accepted(served: Served) -> None:
    files = {**PROBLEM, "rootdir": b"/var/lib/mock",
             "os_release_in_rootdir": b"TestOS release 1 (Demo)",
             "packages": b"crasher-1.0-1.x86_64\n"}  # fmt: skip
    assert upload(served.url, abrt_archive(files)).status_code == 201


def test_truncated_body_leaves_nothing(
    served: Served, server_config: Callable[..., Config]
) -> None:
    """A client that announces more than it sends and hangs up."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-xz\r\n"
            b"Content-Length: 100000\r\n\r\n" + abrt_archive()[:1000]
        )
        connection.shutdown(socket.SHUT_WR)
        connection.recv(4096)
    deadline = time.monotonic() + 5
    while leftovers(server_config().data_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(server_config().data_dir) == []
    assert requests.get(f"{served.url}/settings", timeout=5).status_code == 200


def test_concurrent_uploads_get_distinct_tasks(
    served: Served, server_config: Callable[..., Config]
) -> None:
    body = abrt_archive({**PROBLEM, "coredump": elf_core() + os.urandom(4 << 20)})
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: upload(served.url, body), range(8)))
    assert [r.status_code for r in responses] == [201] * 8
    ids = {r.headers["X-Task-Id"] for r in responses}
    assert len(ids) == 8
    tasks = server_config().data_dir / "spool" / "tasks"
    assert {p.name for p in tasks.iterdir()} == ids


def test_status_polls_stay_fast_during_a_big_unpack(
    serve: Callable[[Config], Served], server_config: Callable[..., Config]
) -> None:
    """Status polls are answered while a 400 MiB core unpacks: the unpack runs off the
    event loop. (How fast they are is a line of bench/server_bench.py, not a test.)"""
    served = serve(server_config())
    create = upload(served.url, abrt_archive())
    task_id, password = create.headers["X-Task-Id"], create.headers["X-Task-Password"]
    big = xz(tar(regular({**PROBLEM, "coredump": elf_core(size=400 << 20)})))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(upload, served.url, big)
        answered_during_the_upload = 0
        while not pending.done():
            answer = requests.get(
                f"{served.url}/{task_id}", headers={"X-Task-Password": password}, timeout=5
            )
            assert answer.status_code == 200
            password = answer.headers["X-Task-Password"]
            answered_during_the_upload += not pending.done()
        assert pending.result().status_code == 201
    # An event loop blocked by the unpack answers nothing until the upload is done.
    assert answered_during_the_upload >= 3


def test_hostile_corpus_against_the_real_serve_command(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    """The same corpus through ``retracer serve`` (gevent monkey-patched, thread pool)."""
    url = serve_process(settings_mapping(tmp_path, max_unpacked_size_mib=8)).start("--no-worker")
    spool = tmp_path / "data" / "spool"
    accepted = set()
    for case, (body, code, message) in HOSTILE.items():
        response = upload(url, body)
        assert (response.status_code, response.text) == (code, message), case
        assert list((spool / "incoming").iterdir()) == [], case
        good = upload(url, abrt_archive())
        assert good.status_code == 201, case
        accepted.add(good.headers["X-Task-Id"])
    assert {p.name for p in (spool / "tasks").iterdir()} == accepted
    assert not os.path.exists(ESCAPED)


def test_expect_100_continue_is_answered_before_the_body(served: Served) -> None:
    """Clients such as curl wait for "100 Continue" before they send a large body."""
    body = abrt_archive()
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            f"POST /create HTTP/1.1\r\nHost: {host}\r\nContent-Type: {XZ_TAR}\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert connection.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n")
        connection.sendall(body)
        assert connection.recv(4096).startswith(b"HTTP/1.1 201 ")


BIG_CORE = elf_core() + random.Random(6).randbytes(1 << 20)  # more than any read buffer holds


@pytest.mark.parametrize("pack", [tar, lambda members: xz(tar(members))], ids=["plain", "xz"])
def test_a_connection_serves_more_requests_after_an_upload(
    served: Served, pack: Callable[[list[Member]], bytes]
) -> None:
    """The server consumes exactly the body, whether it took all of it or refused it
    early: the next request on the same connection is answered."""
    body = pack(regular({**PROBLEM, "coredump": BIG_CORE}))
    refused = pack([Member("evil.sh", b"x"), Member("coredump", BIG_CORE)])
    host, port = served.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        answers = []
        for payload in (body, refused, body):
            connection.request("POST", "/create", body=payload, headers={"Content-Type": XZ_TAR})
            socket_used = connection.sock
            response = connection.getresponse()
            response.read()
            answers.append(response.status)
            assert connection.sock is socket_used, "the server closed the connection"
        connection.request("GET", "/settings")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert answers == [201, 403, 201]
