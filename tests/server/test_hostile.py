"""Hostile and slow clients against the real ``retracer serve``, and faults.

- every hostile upload gets its 4xx and one sentence within a second (the client's
  socket timeout is the bound), the server's peak RSS stays under 150 MB, and
  nothing stays in the spool;
- idle ``POST /create`` connections cost no thread: a real upload, /checkpackage and
  status polls go on beside 20 of them, and they are dropped at the timeout;
- ``kill -9`` mid-upload and right after a 201, and a full spool, lose nothing that
  was accepted and leave no debris.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testing.server.archives import PROBLEM, abrt_archive, elf_core, regular, tar, xz
from testing.server.hostile import CORPUS, HOSTILE, Case
from testing.server.live import ServeFactory, settings_mapping
from tests.server.client import XZ_TAR, create_task, wait_finished

ALL_CASES = {**{name: Case(*case) for name, case in HOSTILE.items()}, **CORPUS}
MAX_RSS_KIB = 150 * 1024


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def spool_entries(tmp_path: Path, folder: str) -> set[str]:
    return {p.name for p in (tmp_path / "data" / "spool" / folder).iterdir()}


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def start_upload(url: str, body: bytes, sent: int) -> socket.socket:
    """A client that sends its headers and the first ``sent`` bytes, then waits."""
    connection = socket.create_connection(address(url), timeout=30)
    connection.sendall(
        f"POST /create HTTP/1.1\r\nHost: x\r\nContent-Type: {XZ_TAR}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:sent]
    )
    return connection


def answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes or the socket times out."""
    parts = []
    while part := connection.recv(65536):
        parts.append(part)
        if b"\r\n\r\n" in b"".join(parts) and b"Connection: close" not in b"".join(parts):
            break
    return b"".join(parts)


def test_hostile_corpus_gets_a_4xx_within_a_second(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    server = serve_process(settings_mapping(tmp_path, max_unpacked_size_mib=8))
    url = server.start("--no-worker")
    for name, case in ALL_CASES.items():
        response = requests.post(
            f"{url}/create", data=case.body, headers={"Content-Type": XZ_TAR}, timeout=1.0
        )
        assert 400 <= response.status_code < 500, name
        assert response.status_code == case.status, (name, response.text)
        assert response.text.startswith(case.text), name
        assert response.text.count("\n") == 1 and response.text.endswith(".\n"), name
    assert spool_entries(tmp_path, "incoming") == set()
    assert spool_entries(tmp_path, "tasks") == set()
    assert server.process is not None
    assert peak_rss_kib(server.process.pid) < MAX_RSS_KIB
    create_task(url)  # and the server still works


def test_idle_uploads_cost_no_thread_and_are_dropped_at_the_timeout(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    data = settings_mapping(
        tmp_path,
        body_timeout_seconds=4,
        header_timeout_seconds=4,
        max_concurrent_uploads=2,
        protocol_profile="abrt",
    )
    url = serve_process(data).start("--no-worker")
    idle = [start_upload(url, abrt_archive(), 0) for _ in range(20)]
    silent = socket.create_connection(address(url), timeout=30)
    silent.sendall(b"POST /create HTTP/1.1\r\nHost: x\r\n")  # headers never finish

    task_id, password = create_task(url)
    for _ in range(5):
        status = requests.get(f"{url}/{task_id}", headers={"X-Task-Password": password}, timeout=2)
        assert (status.status_code, status.headers["X-Task-Status"]) == (200, "PENDING")
    package = requests.get(
        f"{url}/checkpackage",
        headers={"X-Package-NVR": "crasher-1.0-1", "X-Package-Arch": "x86_64"},
        timeout=2,
    )
    # The release has no repository: the lookup ran in the thread pool and said so.
    assert (package.status_code, package.text) == (
        503,
        f"Repository {tmp_path}/no-such-repository cannot be read: it has no"
        " repodata/repomd.xml.\n",
    )
    # All that happened while every idle client still held its connection...
    for connection in [*idle, silent]:
        connection.setblocking(False)
        with pytest.raises(BlockingIOError):
            connection.recv(1)
        connection.settimeout(15)
    # ...which the server then drops at the timeout, with a reason.
    for connection in idle:
        reply = answer(connection)
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert reply.endswith(b"The upload stalled: nothing arrived for 4 s after 0 of"
                              b" %d bytes.\n" % len(abrt_archive()))  # fmt: skip
        connection.close()
    reply = answer(silent)
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert reply.endswith(b"The request line and headers did not arrive in time.\n")
    silent.close()
    assert spool_entries(tmp_path, "incoming") == set()


def test_headers_dribbled_byte_by_byte_are_cut_at_the_deadline(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    """Each byte comes well within the socket timeout; the headers' deadline still ends it."""
    data = settings_mapping(tmp_path, header_timeout_seconds=2, body_timeout_seconds=30)
    url = serve_process(data).start("--no-worker")
    with socket.create_connection(address(url), timeout=0.25) as connection:
        connection.sendall(b"POST /create HTTP/1.1\r\n")
        reply = b""
        for byte in b"X-Padding: " + b"a" * 60:  # 15 s at this pace
            connection.sendall(bytes([byte]))
            try:
                reply = connection.recv(4096)
                break
            except TimeoutError:
                continue
        assert reply.startswith(b"HTTP/1.1 408 "), reply


def test_kill_9_mid_upload_and_right_after_a_201_loses_nothing(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    server = serve_process(settings_mapping(tmp_path))
    url = server.start("--no-worker")
    body = tar(regular({**PROBLEM, "coredump": elf_core(size=4 << 20)}))
    cut_off = start_upload(url, body, len(body) // 2)
    deadline = time.monotonic() + 10
    while not spool_entries(tmp_path, "incoming"):  # the upload is being unpacked
        assert time.monotonic() < deadline, "the upload never reached the spool"
        time.sleep(0.02)
    accepted = create_task(url)
    server.kill()  # right after the 201, with the other upload half-way
    cut_off.close()

    url = server.start()
    assert spool_entries(tmp_path, "incoming") == set()
    assert spool_entries(tmp_path, "tasks") == {accepted[0]}
    status, _ = wait_finished(url, *accepted)
    assert status == "FINISHED_FAILURE"  # the retrace ran, and failed for its reason


@pytest.fixture
def small_spool(tmp_path: Path) -> Iterator[Path]:
    """The spool on a 24 MiB tmpfs of its own, so that it can really fill up."""
    spool = tmp_path / "data" / "spool"
    spool.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(spool)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield spool
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=True)


def test_a_full_spool_answers_507_and_loses_nothing(
    serve_process: ServeFactory, tmp_path: Path, small_spool: Path
) -> None:
    data = settings_mapping(tmp_path, min_free_space_mib=1, max_unpacked_size_mib=64)
    url = serve_process(data).start("--no-worker")
    first = create_task(url)
    kept = {p.name: p.read_bytes() for p in (small_spool / "tasks" / first[0] / "crash").iterdir()}

    # One upload of a 14 MiB core is half-way; another one would fit in what is free
    # now, but not beside the first: its space is reserved, so the second gets 507.
    core = elf_core(size=14 << 20)
    slow_body = tar(regular({**PROBLEM, "coredump": core}))
    slow = start_upload(url, slow_body, 2 << 20)
    deadline = time.monotonic() + 10
    while not spool_entries(tmp_path, "incoming"):
        assert time.monotonic() < deadline, "the upload never reached the spool"
        time.sleep(0.02)
    second = requests.post(
        f"{url}/create",
        data=xz(tar(regular({**PROBLEM, "coredump": core}))),
        headers={"Content-Type": XZ_TAR},
        timeout=10,
    )
    assert (second.status_code, second.text) == (
        507,
        "The server does not have enough free disk space to store this upload.\n",
    )
    slow.sendall(slow_body[2 << 20 :])
    assert answer(slow).startswith(b"HTTP/1.1 201 ")
    slow.close()

    # Now the spool is really full: the next one is refused as it unpacks.
    third = requests.post(
        f"{url}/create",
        data=xz(tar(regular({**PROBLEM, "coredump": elf_core(size=12 << 20)}))),
        headers={"Content-Type": XZ_TAR},
        timeout=10,
    )
    assert third.status_code == 507
    assert spool_entries(tmp_path, "incoming") == set()
    assert len(spool_entries(tmp_path, "tasks")) == 2
    crash = small_spool / "tasks" / first[0] / "crash"
    assert {p.name: p.read_bytes() for p in crash.iterdir()} == kept
    status = requests.get(f"{url}/{first[0]}", headers={"X-Task-Password": first[1]}, timeout=5)
    assert status.status_code == 200


def test_full_queue_counts_uploads_in_flight(serve_process: ServeFactory, tmp_path: Path) -> None:
    url = serve_process(settings_mapping(tmp_path, workers=1, max_queued_tasks=1)).start(
        "--no-worker"
    )
    create_task(url)
    body = tar(regular({**PROBLEM, "coredump": elf_core(size=2 << 20)}))
    in_flight = start_upload(url, body, 1 << 20)
    deadline = time.monotonic() + 10
    while not spool_entries(tmp_path, "incoming"):
        assert time.monotonic() < deadline, "the upload never reached the spool"
        time.sleep(0.02)
    settings = requests.get(f"{url}/settings", timeout=5).text
    assert "running_tasks 2\nmax_running_tasks 2\n" in settings
    refused = requests.post(
        f"{url}/create", data=abrt_archive(), headers={"Content-Type": XZ_TAR}, timeout=5
    )
    assert (refused.status_code, refused.text) == (
        503,
        "The server is full (2 of 2 tasks running or queued); try again later.\n",
    )
    in_flight.sendall(body[1 << 20 :])
    assert answer(in_flight).startswith(b"HTTP/1.1 201 ")
    in_flight.close()


def test_busy_upload_slots_answer_503_and_spare_other_requests(
    serve_process: ServeFactory, tmp_path: Path
) -> None:
    data = settings_mapping(tmp_path, max_concurrent_uploads=1, upload_slot_wait_seconds=1)
    url = serve_process(data).start("--no-worker")
    body = tar(regular({**PROBLEM, "coredump": elf_core(size=2 << 20)}))
    holder = start_upload(url, body, 1 << 20)  # its body has started: it holds the slot
    deadline = time.monotonic() + 10
    while not spool_entries(tmp_path, "incoming"):
        assert time.monotonic() < deadline, "the upload never reached the spool"
        time.sleep(0.02)
    refused = requests.post(
        f"{url}/create", data=abrt_archive(), headers={"Content-Type": XZ_TAR}, timeout=5
    )
    assert (refused.status_code, refused.text) == (
        503,
        "All 1 upload slots stayed busy for 1 s; try again in a minute.\n",
    )
    assert requests.get(f"{url}/settings", timeout=2).status_code == 200
    holder.sendall(body[1 << 20 :])
    assert answer(holder).startswith(b"HTTP/1.1 201 ")
    holder.close()
    create_task(url)
