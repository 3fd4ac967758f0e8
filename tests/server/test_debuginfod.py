"""The debuginfod service over the testos repository, spoken to by real clients.

elfutils' ``debuginfod-find`` and host gdb (with ``DEBUGINFOD_URLS`` and nothing
installed) talk to ``retracer debuginfod`` run as a command; the protocol details
(HEAD, 404s, traversal, ranges, sections, metrics, one unpack per cold file) are
checked over HTTP against the main app on a real gevent server.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from elftools.elf.elffile import ELFFile

from retracer.server.config import Config
from retracer.server.debuginfod.artifacts import Artifact, ArtifactCache, canonical_source_path
from retracer.server.sendfile import read_headers
from testing.server.live import Served, write_config
from testing.testos import Testos

TOOL_TIMEOUT = 120


def build_id_of(testos: Testos, nvr: str) -> str:
    """The build-id of the one ELF file in the binary package ``nvr``."""
    (rpm_file,) = testos.repo.rglob(f"{nvr}.x86_64.rpm")
    listing = subprocess.run(
        ["rpm", "-qlp", "--nosignature", str(rpm_file)], capture_output=True, text=True, check=True
    ).stdout.split()
    (link,) = [path for path in listing if path.startswith("/usr/lib/.build-id/") and
               re.match(r"^/usr/lib/\.build-id/[0-9a-f]{2}/[0-9a-f]+$", path)]  # fmt: skip
    return "".join(link.split("/")[-2:])


def unpacked(testos: Testos, nvr: str, member: str) -> bytes:
    """A file of a package, unpacked with rpm2cpio and cpio (not retracer's reader)."""
    (rpm_file,) = testos.repo.rglob(f"{nvr}.x86_64.rpm")
    cpio = subprocess.run(["rpm2cpio", str(rpm_file)], capture_output=True, check=True).stdout
    return subprocess.run(
        ["cpio", "-i", "--quiet", "--to-stdout", f".{member}"],
        input=cpio, capture_output=True, check=True,
    ).stdout  # fmt: skip


def build_id_note(path: Path) -> str:
    with path.open("rb") as file:
        for section in ELFFile(file).iter_sections():
            if section["sh_type"] == "SHT_NOTE":
                for note in section.iter_notes():
                    if note["n_type"] == "NT_GNU_BUILD_ID":
                        return str(note["n_desc"])
    raise AssertionError(f"{path} has no build-id note")


def config_for(testos: Testos, tmp_path: Path, **debuginfod: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "server": {"port": 0},
        "debuginfod": {"port": 0, **debuginfod},
        "releases": [testos.release_config()],
    }


@pytest.fixture
def debuginfod_command(testos: Testos, tmp_path: Path) -> Iterator[str]:
    """``retracer debuginfod`` as a subprocess; yields its URL."""
    config_file = write_config(tmp_path / "retracer.yaml", config_for(testos, tmp_path))
    log_file = tmp_path / "debuginfod.log"
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "retracer.server.cli", "--config", str(config_file),
             "debuginfod"],
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (found := re.findall(r"serving on (http://\S+)", log_file.read_text())):
            assert process.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, "retracer debuginfod did not announce itself"
            time.sleep(0.05)
        yield found[0]
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def served_testos(
    testos: Testos, tmp_path: Path, config_factory: Callable[..., Config], serve: Any
) -> Served:
    """The main app (retrace protocol and debuginfod) over the testos repository."""
    served: Served = serve(config_factory(config_for(testos, tmp_path)))
    return served


def client_env(url: str, cache: Path) -> dict[str, str]:
    return {**os.environ, "DEBUGINFOD_URLS": url, "DEBUGINFOD_CACHE_PATH": str(cache)}


@pytest.mark.parametrize("version", ["1.0", "1.1"])  # 1.0 is not the newest
def test_debuginfod_find_fetches_debuginfo_executable_and_source(
    testos: Testos, debuginfod_command: str, tmp_path: Path, version: str
) -> None:
    nvr = f"crasher-{version}-1"
    build_id = build_id_of(testos, nvr)
    env = client_env(debuginfod_command, tmp_path / "client-cache")

    def find(*args: str) -> Path:
        done = subprocess.run(
            ["debuginfod-find", *args], env=env, capture_output=True, text=True,
            timeout=TOOL_TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return Path(done.stdout.strip())

    debuginfo = find("debuginfo", build_id)
    assert build_id_note(debuginfo) == build_id
    assert debuginfo.read_bytes() == unpacked(
        testos,
        f"crasher-debuginfo-{version}-1",
        f"/usr/lib/debug/usr/bin/crasher-{version}-1.x86_64.debug",
    )
    executable = find("executable", build_id)
    assert executable.read_bytes() == unpacked(testos, nvr, "/usr/bin/crasher")
    source = find("source", build_id, f"/usr/src/debug/crasher-{version}-1.x86_64/crasher.c")
    assert source.read_text().startswith(f"/* crasher {version}:")


def test_gdb_prints_frames_with_source_lines_from_debuginfod(
    testos: Testos, debuginfod_command: str, tmp_path: Path
) -> None:
    crash = testos.crashes["crasher"]
    done = subprocess.run(
        ["gdb", "-batch", "-nx", "-ex", "set debuginfod enabled on",
         "-ex", f"core-file {crash.core}", "-ex", "bt"],
        env=client_env(debuginfod_command, tmp_path / "client-cache"),
        capture_output=True, text=True, timeout=TOOL_TIMEOUT,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert f"in {crash.crash_function} " in output, output
    assert f"at {crash.crash_site}" in output, output
    assert "/* CRASH HERE */" in output, output  # the source line itself, fetched
    assert "crasher_v10_run" in output and "at crasher.c:" in output, output


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def request(url: str, method: str, path: str, **headers: str) -> Reply:
    """One request with the path sent exactly as given (no client-side normalising)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def test_head_gives_the_size_and_origin_without_a_body(
    testos: Testos, served_testos: Served
) -> None:
    build_id = build_id_of(testos, "crasher-1.0-1")
    response = request(served_testos.url, "HEAD", f"/buildid/{build_id}/executable")
    assert response.status == 200
    size = len(unpacked(testos, "crasher-1.0-1", "/usr/bin/crasher"))
    assert response.headers["Content-Length"] == response.headers["X-DEBUGINFOD-SIZE"] == str(size)
    assert response.headers["X-DEBUGINFOD-FILE"] == "/usr/bin/crasher"
    assert response.headers["X-DEBUGINFOD-ARCHIVE"].endswith("/crasher-1.0-1.x86_64.rpm")
    assert response.body == b""


@pytest.mark.parametrize(
    "path",
    [
        "/buildid/0123456789abcdef0123456789abcdef01234567/debuginfo",
        "/buildid/0123456789abcdef0123456789abcdef01234567/executable",
        "/buildid/0123456789abcdef0123456789abcdef01234567/source/usr/src/debug/x.c",
        "/buildid/0123456789abcdef0123456789abcdef01234567/section/.debug_info",
        "/buildid/not-hex/debuginfo",
        "/buildid/ABC/debuginfo",
    ],
)
def test_unknown_build_ids_get_404(served_testos: Served, path: str) -> None:
    for method in ("GET", "HEAD"):
        assert request(served_testos.url, method, path).status == 404


@pytest.mark.parametrize(
    "source",
    [
        "/usr/src/debug/crasher-1.0-1.x86_64/../../../../etc/passwd",
        "/usr/src/debug/crasher-1.0-1.x86_64/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/etc/passwd",
        "/usr/src/debug/crasher-1.0-1.x86_64/../crasher-1.1-1.x86_64/crasher.c",  # other build
        "/usr/src/debug/libcrash-2.0-1.x86_64/libcrash.c",  # another package's source
        "/usr/src/debug/crasher-1.0-1.x86_64",  # a folder
        "/usr/lib/debug/usr/bin/crasher-1.0-1.x86_64.debug",  # in the package, not a source
    ],
)
def test_source_paths_outside_the_build_get_404(
    testos: Testos, served_testos: Served, source: str
) -> None:
    build_id = build_id_of(testos, "crasher-1.0-1")
    response = request(served_testos.url, "GET", f"/buildid/{build_id}/source{source}")
    assert response.status == 404
    assert b"root:" not in response.body


def test_source_paths_are_matched_after_removing_dot_segments(
    testos: Testos, served_testos: Served
) -> None:
    build_id = build_id_of(testos, "crasher-1.0-1")
    path = "/usr/src/debug//crasher-1.0-1.x86_64/./sub/../crasher.c"
    response = request(served_testos.url, "GET", f"/buildid/{build_id}/source{path}")
    assert response.status == 200
    assert response.body.startswith(b"/* crasher 1.0:")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/usr/src/debug/a/b.c", "/usr/src/debug/a/b.c"),
        ("/zoo//../bar/foo.c", "/zoo/bar/foo.c"),  # RFC 3986 5.2.4, then // -> /
        ("/a/./b/../../c", "/c"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("usr/src/x.c", "/usr/src/x.c"),
    ],
)
def test_canonical_source_path(path: str, expected: str) -> None:
    assert canonical_source_path(path) == expected


def test_ranges_and_sections(testos: Testos, served_testos: Served) -> None:
    build_id = build_id_of(testos, "crasher-1.0-1")
    ranged = request(served_testos.url, "GET", f"/buildid/{build_id}/debuginfo", Range="bytes=1-3")
    assert ranged.status == 206
    assert ranged.body == b"ELF"
    base = f"{served_testos.url}/buildid/{build_id}"
    section = requests.get(f"{base}/section/.debug_info", timeout=30)
    assert section.status_code == 200
    debuginfo = requests.get(f"{served_testos.url}/buildid/{build_id}/debuginfo", timeout=30)
    assert section.content and section.content in debuginfo.content
    # .text is only a placeholder (NOBITS) in the debuginfo file: it comes from the executable.
    text = requests.get(f"{served_testos.url}/buildid/{build_id}/section/.text", timeout=30)
    executable = unpacked(testos, "crasher-1.0-1", "/usr/bin/crasher")
    assert text.status_code == 200 and text.content and text.content in executable
    missing = requests.get(f"{served_testos.url}/buildid/{build_id}/section/.nope", timeout=30)
    assert missing.status_code == 404


def metric(url: str, name: str, **labels: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=30).text
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    wanted = f"{name}{{{selector}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def test_concurrent_cold_requests_unpack_once_and_metrics_count(
    testos: Testos, served_testos: Served
) -> None:
    url = served_testos.url
    build_id = build_id_of(testos, "cxxabort-1.0-1")
    expected = unpacked(
        testos, "cxxabort-debuginfo-1.0-1", "/usr/lib/debug/usr/bin/cxxabort-1.0-1.x86_64.debug"
    )
    clients = 16
    start = threading.Barrier(clients)
    bodies: list[bytes] = []

    def fetch() -> None:
        start.wait()
        response = requests.get(f"{url}/buildid/{build_id}/debuginfo", timeout=60)
        assert response.status_code == 200
        bodies.append(response.content)

    threads = [threading.Thread(target=fetch) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert bodies == [expected] * clients
    assert metric(url, "retracer_debuginfod_cache_misses_total") == 1
    assert metric(url, "retracer_debuginfod_requests_total", kind="debuginfo", status="200") == (
        clients
    )
    requests.get(f"{url}/buildid/{build_id}/debuginfo", timeout=30).raise_for_status()
    assert metric(url, "retracer_debuginfod_cache_hits_total") >= 1
    assert metric(url, "retracer_debuginfod_sent_bytes_total") == len(expected) * (clients + 1)
    request(url, "GET", "/buildid/00ff/executable")
    assert metric(url, "retracer_debuginfod_requests_total", kind="executable", status="404") == 1


def test_hot_files_leave_through_sendfile(
    testos: Testos, served_testos: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spy on os.sendfile (which still sends): hot bodies go through it, whole."""
    build_id = build_id_of(testos, "crasher-1.1-1")
    url = f"{served_testos.url}/buildid/{build_id}/executable"
    cold = requests.get(url, timeout=30).content
    sent: list[int] = []
    real_sendfile = os.sendfile

    def spy(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        done = real_sendfile(out_fd, in_fd, offset, count)
        sent.append(done)
        return done

    monkeypatch.setattr(os, "sendfile", spy)
    assert requests.get(url, timeout=30).content == cold
    assert sum(sent) == len(cold)


def test_the_cache_stays_under_its_cap_evicting_the_least_recently_served(
    testos: Testos, tmp_path: Path, config_factory: Callable[..., Config]
) -> None:
    config = config_factory(config_for(testos, tmp_path))
    artifacts = [
        Artifact(build_id_of(testos, nvr), "debuginfo")
        for nvr in ("crasher-1.0-1", "crasher-1.1-1", "libcrash-2.0-1")
    ]

    def cache(max_bytes: int) -> ArtifactCache:
        return ArtifactCache(config.releases, tmp_path / "index", tmp_path / "cache", max_bytes)

    sizes = [found.size for a in artifacts if (found := cache(1 << 30).fetch(a))]
    assert len(sizes) == 3
    for path in (tmp_path / "cache").rglob("debuginfo"):
        path.unlink()
    capped = cache(sizes[0] + sizes[1] + 1)
    oldest, _, newest = artifacts
    served_long_ago = time.time() - 3600
    first = capped.fetch(oldest)
    assert first is not None
    os.utime(first.path, (served_long_ago, served_long_ago))
    for artifact in artifacts[1:]:
        capped.fetch(artifact)
    assert capped.cached(oldest) is None
    assert capped.cached(newest) is not None
    kept = sum(path.stat().st_size for path in (tmp_path / "cache").rglob("debuginfo"))
    assert kept <= capped.max_bytes


@pytest.mark.parametrize(
    ("block", "status", "fields"),
    [
        (b"Host: a\r\nRange: bytes=0-1\r\n\r\n", "", [("Host", "a"), ("Range", "bytes=0-1")]),
        (b"X-Long: one\r\n two\r\n\r\n", "", [("X-Long", "one two")]),
        (b"Host:a\n\n", "", [("Host", "a")]),
        (b"no colon here\r\n\r\n", "Malformed header line", []),
        (b"Spaced : x\r\n\r\n", "Malformed header line", []),
        (b"X: " + b"y" * 70000 + b"\r\n\r\n", "Line too long", []),
        (b"".join(b"H%d: v\r\n" % n for n in range(101)) + b"\r\n", "Too many headers", None),
    ],
)
def test_request_headers_are_read_like_pywsgi_reads_them(
    block: bytes, status: str, fields: list[tuple[str, str]] | None
) -> None:
    message = read_headers(io.BytesIO(block + b"BODY"))
    assert message.status == status
    if fields is not None:
        assert message.items() == fields


def test_a_request_body_is_not_taken_for_the_next_request(
    testos: Testos, served_testos: Served
) -> None:
    build_id = build_id_of(testos, "crasher-1.0-1")
    path = f"/buildid/{build_id}/debuginfo"
    assert request(served_testos.url, "GET", path).status == 200  # now hot
    host, port = served_testos.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode()
            + f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 2, received[:300]
