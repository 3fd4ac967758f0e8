"""An upstream repository served over real HTTP on loopback, with request counting."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class UpstreamRepository:
    """A directory laid out like a Fedora repository, with createrepo_c metadata."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "Packages").mkdir(parents=True, exist_ok=True)

    def add(self, rpm_files: Iterable[Path]) -> None:
        for rpm_file in rpm_files:
            folder = self.root / "Packages" / rpm_file.name[0].lower()
            folder.mkdir(exist_ok=True)
            shutil.copy(rpm_file, folder / rpm_file.name)

    def remove(self, file_name: str) -> None:
        self.path_of(file_name).unlink()

    def path_of(self, file_name: str) -> Path:
        return self.root / "Packages" / file_name[0].lower() / file_name

    def refresh(self) -> None:
        """Regenerate the metadata, as upstream does after each change."""
        subprocess.run(
            ["createrepo_c", "--quiet", "--no-database", str(self.root)],
            check=True,
            capture_output=True,
        )


class UpstreamServer:
    """Serves ``root`` on 127.0.0.1 at a free port; counts requests by path.

    ``stall_on`` names a file whose download sends half its bytes and then hangs until
    ``release`` is set, so a test can interrupt a sync in the middle of a file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: Counter[str] = Counter()
        self.stall_on: str | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        handler = partial(_Handler, self, directory=str(root))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def count(self, suffix: str) -> int:
        with self._lock:
            return sum(n for path, n in self.requests.items() if path.endswith(suffix))

    def start(self) -> UpstreamServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def note(self, path: str) -> None:
        with self._lock:
            self.requests[path] += 1


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, server_state: UpstreamServer, *args: Any, **kwargs: Any) -> None:
        self.state = server_state
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self.state.note(self.path)
        stall_on = self.state.stall_on
        if stall_on is not None and self.path.endswith("/" + stall_on):
            self._send_half_then_hang()
            return
        super().do_GET()

    def _send_half_then_hang(self) -> None:
        body = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.state.stalled.set()
        self.state.release.wait(timeout=60)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean
