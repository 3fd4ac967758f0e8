"""Real retraces of the testos crashes: real podman, real rpm, real gdb."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from podman import PodmanClient

from retracer.builder import retrace as retrace_module
from retracer.builder import sandbox
from retracer.builder.inspection import inspect_core
from retracer.builder.model import RetraceResult, Stage
from retracer.builder.problem import read_problem
from retracer.builder.retrace import Analyzer
from testing.podman_service import PodmanService
from testing.testos import Testos
from tests.builder.conftest import RecordingObserver

Retraced = Callable[[str], RetraceResult]


def crashed_thread(result: RetraceResult) -> dict[str, Any]:
    (thread,) = [t for t in result.report.to_json()["threads"] if t["crashed"]]
    return thread


def frame_sites(thread: dict[str, Any]) -> list[str]:
    return [f"{f['file']}:{f['line']}" for f in thread["frames"] if f["file"]]


def test_crash_in_old_libcrash_uses_the_old_debuginfo(retraced: Retraced, testos: Testos) -> None:
    crash = testos.crashes["crasher"]
    result = retraced("crasher")
    top = crashed_thread(result)["frames"][0]

    assert top["function"] == crash.crash_function
    assert f"{top['file']}:{top['line']}".endswith(crash.crash_site)
    assert top["module"].endswith(".so.2") or "libcrash" in top["module"]
    assert top["locals"]  # debuginfo gives the frame's variables
    assert crash.crash_function in result.backtrace
    assert crash.newer_function not in result.backtrace
    assert crash.newer_crash_site not in "\n".join(frame_sites(crashed_thread(result)))
    installed = {p.nevra for p in result.package_set.packages}
    assert {"libcrash-2.0-1.x86_64", "libcrash-debuginfo-2.0-1.x86_64"} <= installed
    assert {"crasher-1.0-1.x86_64", "crasher-debuginfo-1.0-1.x86_64"} <= installed
    assert not any(n.startswith(("libcrash-2.1", "crasher-1.1")) for n in installed)
    assert result.report.to_json()["signal"]["name"] == "SIGSEGV"


def test_report_names_module_build_id_and_offset(retraced: Retraced) -> None:
    result = retraced("crasher")
    top = crashed_thread(result)["frames"][0]
    modules = {m["path"]: m for m in result.report.to_json()["modules"]}
    assert top["build_id"] == modules[top["module"]]["build_id"]
    assert 0 < top["offset"] < 1 << 24
    assert modules[top["module"]]["debuginfo"] == "libcrash-debuginfo-2.0-1.x86_64"


def test_text_has_every_section_abrt_shows(retraced: Retraced) -> None:
    text = retraced("crasher").backtrace
    for section in (
        "Thread 1",
        "Shared libraries:",
        "Registers of the crashed thread:",
        "rip",
        "Disassembly around the faulting instruction:",
        "=>",
    ):
        assert section in text


def test_threaded_crash_shows_every_thread_and_the_crashed_one(
    retraced: Retraced, testos: Testos
) -> None:
    crash = testos.crashes["threadcrash"]
    result = retraced("threadcrash")
    threads = result.report.to_json()["threads"]
    assert len(threads) >= 3
    assert all(t["frames"] for t in threads)
    crashed = crashed_thread(result)
    assert result.report.to_json()["crash_thread"] == crashed["num"]
    assert crashed["frames"][0]["function"] == crash.crash_function
    assert any(s.endswith(crash.crash_site) for s in frame_sites(crashed))
    for thread in threads:
        assert f"Thread {thread['num']} " in result.backtrace


def test_cxx_abort_shows_the_throw_site_and_the_message(retraced: Retraced, testos: Testos) -> None:
    crash = testos.crashes["cxxabort"]
    result = retraced("cxxabort")
    site = result.report.to_json()["throw_site"]
    assert (
        site["function"].startswith(crash.crash_function)
        or crash.crash_function in site["function"]
    )
    assert f"{site['file']}:{site['line']}".endswith(crash.crash_site)
    assert result.report.to_json()["signal"]["name"] == "SIGABRT"
    assert "Uncaught C++ exception thrown in" in result.backtrace
    frames = crashed_thread(result)["frames"]
    thrower = next(f for f in frames if crash.crash_function in (f["function"] or ""))
    assert any("cxx_message" in name for name in thrower["locals"])


def test_missing_debuginfo_is_reported_and_the_rest_is_full(
    retraced: Retraced, testos: Testos
) -> None:
    crash = testos.crashes["quietcrash"]
    result = retraced("quietcrash")
    missing = result.report.to_json()["missing_debuginfo"]
    quiet = [m for m in missing if "libquiet" in m["path"]]
    assert len(quiet) == 1 and len(quiet[0]["build_id"]) == 40
    assert quiet[0]["path"] in {m.path for m in result.missing_debuginfo}
    top = crashed_thread(result)["frames"][0]
    assert top["function"] == crash.crash_function
    assert f"{top['file']}:{top['line']}".endswith(crash.crash_site)
    quiet_frames = [f for f in crashed_thread(result)["frames"] if f["module"] == quiet[0]["path"]]
    assert quiet_frames and all(f["file"] is None for f in quiet_frames)


def test_second_retrace_of_the_same_package_set_reuses_the_store(
    fresh_analyzer: FreshAnalyzer, testos: Testos
) -> None:
    analyzer = fresh_analyzer()
    observer = RecordingObserver()
    first = analyzer.retrace(testos.crashes["crasher"].problem_dir, observer)
    assert not first.environment_cached
    (unpacked,) = [line for line in observer.lines if line.startswith("unpacked into the store:")]
    assert "libcrash-debuginfo-2.0-1.x86_64" in unpacked.split()

    observer = RecordingObserver()
    second = analyzer.retrace(testos.crashes["crasher"].problem_dir, observer)
    assert second.environment_cached
    assert not any(line.startswith("unpacked into the store:") for line in observer.lines)
    assert f"environment {second.environment} reused from the store" in observer.lines
    assert second.environment == first.environment
    assert second.backtrace == first.backtrace
    assert observer.stages == [Stage.ANALYZING, Stage.PREPARING, Stage.GENERATING, Stage.CLEANING]


FreshAnalyzer = Callable[[], Analyzer]


@pytest.fixture
def fresh_analyzer(analyzer: Analyzer, tmp_path: Path) -> Iterator[FreshAnalyzer]:
    """Makes analyzers with no memory of earlier crashes and an empty store (the base
    image stays cached); all of them share one state folder, like workers of one host."""
    made: list[Analyzer] = []

    def make() -> Analyzer:
        made.append(Analyzer(analyzer.settings, analyzer.releases, tmp_path / "state"))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_a_repeated_crash_runs_gdb_while_its_core_is_inspected(
    fresh_analyzer: FreshAnalyzer, testos: Testos
) -> None:
    analyzer = fresh_analyzer()
    crash = testos.crashes["crasher"]
    observer = RecordingObserver()
    first = analyzer.retrace(crash.problem_dir, observer)
    assert not any("early" in line for line in observer.lines)

    observer = RecordingObserver()
    second = analyzer.retrace(crash.problem_dir, observer)
    assert f"gdb started early in environment {first.environment}, which the last crash" \
        " of this program needed" in observer.lines  # fmt: skip
    assert not any("stopped" in line for line in observer.lines)
    assert second.backtrace == first.backtrace
    assert crash.crash_function in second.backtrace
    assert observer.stages == [Stage.ANALYZING, Stage.PREPARING, Stage.GENERATING, Stage.CLEANING]


def test_a_first_crash_starts_gdb_while_its_core_is_inspected(
    fresh_analyzer: FreshAnalyzer,
    testos: Testos,
    podman_service: PodmanService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No earlier crash to guess from: gdb's container is made and started at once all
    # the same, and waits for its environment (its start is most of a small retrace's
    # gdb run). The inspection here goes on only once that container runs.
    analyzer = fresh_analyzer()
    gdb_prefix = f"{analyzer.settings.name_prefix}-gdb-"
    running_while_inspected: list[str] = []

    def inspect_once_gdb_runs(*args: Any, **kwargs: Any) -> Any:
        running_while_inspected.extend(running_containers(podman_service, gdb_prefix))
        return inspect_core(*args, **kwargs)

    monkeypatch.setattr(retrace_module, "inspect_core", inspect_once_gdb_runs)
    observer = RecordingObserver()
    result = analyzer.retrace(testos.crashes["crasher"].problem_dir, observer)
    assert not any("early" in line for line in observer.lines)
    assert len(running_while_inspected) == 1
    assert testos.crashes["crasher"].crash_function in result.backtrace


def running_containers(service: PodmanService, prefix: str, timeout: float = 30) -> list[str]:
    """Names of running containers starting with ``prefix``, once there is one (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        names = service.cli("ps", "--filter=status=running", "--format={{.Names}}").stdout.split()
        running = [name for name in names if name.startswith(prefix)]
        if running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def test_a_wrong_early_guess_is_stopped_and_the_right_environment_used(
    fresh_analyzer: FreshAnalyzer, testos: Testos
) -> None:
    analyzer = fresh_analyzer()
    other = analyzer.retrace(testos.crashes["threadcrash"].problem_dir)
    crash = testos.crashes["crasher"]
    # As if crasher's last crash had needed threadcrash's environment.
    program = read_problem(crash.problem_dir, analyzer.releases).program
    last = analyzer.store.index.last_set(
        read_problem(testos.crashes["threadcrash"].problem_dir, analyzer.releases).program
    )
    assert last is not None
    analyzer.store.index.remember_set(program, last)

    observer = RecordingObserver()
    result = analyzer.retrace(crash.problem_dir, observer)
    assert f"gdb started early in environment {other.environment}, which the last crash" \
        " of this program needed" in observer.lines  # fmt: skip
    assert "this crash needs another environment; the early gdb run was stopped" in observer.lines
    assert result.environment != other.environment
    assert crash.crash_function in result.backtrace
    assert testos.crashes["threadcrash"].crash_function not in result.backtrace


def test_concurrent_retraces_share_one_unpack_of_each_package(
    fresh_analyzer: FreshAnalyzer, testos: Testos
) -> None:
    # Two workers (an analyzer each) over one data folder, on the same crash at once.
    workers = [fresh_analyzer() for _ in range(2)]
    observers = [RecordingObserver() for _ in workers]
    crash = testos.crashes["crasher"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda w, o: w.retrace(crash.problem_dir, o), workers, observers))
    unpacked = [
        nevra
        for observer in observers
        for line in observer.lines
        if line.startswith("unpacked into the store:")
        for nevra in line.split(":", 1)[1].split()
    ]
    assert sorted(unpacked) == sorted(p.nevra for p in results[0].package_set.packages)
    assert results[0].backtrace == results[1].backtrace
    assert crash.crash_function in results[0].backtrace


def test_an_analyzer_keeps_one_podman_connection_per_thread(
    fresh_analyzer: FreshAnalyzer, testos: Testos, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counts the clients made, and lets each one work as it would.
    made: list[PodmanClient] = []

    class CountedClient(PodmanClient):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

    monkeypatch.setattr(sandbox, "PodmanClient", CountedClient)
    analyzer = fresh_analyzer()
    crash = testos.crashes["crasher"]
    first = analyzer.retrace(crash.problem_dir)
    analyzer.clean_up()
    observer = RecordingObserver()
    second = analyzer.retrace(crash.problem_dir, observer)
    # The second retrace ran gdb early, on the background thread, and removed containers.
    assert f"gdb started early in environment {first.environment}, which the last crash" \
        " of this program needed" in observer.lines  # fmt: skip
    assert second.backtrace == first.backtrace
    # One for the caller's thread, one for the background thread.
    assert len(made) == 2
