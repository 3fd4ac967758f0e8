"""Retrace one crash: recognise it, resolve its packages, build the environment, run gdb."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from importlib import resources
from pathlib import Path

from retracer.builder.debuginfod import (
    FetchedDebuginfo,
    debuginfo_sources,
    debuginfod_cache_mount,
    fetch_missing_debuginfo,
)
from retracer.builder.early import EarlyRun, LateRoot
from retracer.builder.environment import (
    VIEW_IN_SANDBOX,
    BaseImages,
    Environments,
)
from retracer.builder.errors import BuilderError, SandboxFailed
from retracer.builder.inspection import CORE_IN_SANDBOX, inspect_core
from retracer.builder.layout import builder_dir
from retracer.builder.model import (
    Module,
    ResolvedModule,
    RetraceObserver,
    RetraceResult,
    Stage,
    StepTiming,
)
from retracer.builder.packages import PackageCheck, PackageStore, StoreUsage
from retracer.builder.problem import Problem, read_problem
from retracer.builder.report import Facts, build_report, split_output
from retracer.builder.sandbox import Background, BindMount, RunSpec, Sandbox
from retracer.builder.settings import BuilderSettings
from retracer.sync.errors import PackageNotFound, SyncError
from retracer.sync.index import RepositoryIndex, build_id_link
from retracer.sync.model import Package, PackageSet
from retracer.sync.settings import ReleaseSettings
from retracer.sync.signatures import SignatureChecker

log = logging.getLogger(__name__)

DRIVER_DIR_IN_SANDBOX = "/retrace/driver"
DRIVER_IN_SANDBOX = f"{DRIVER_DIR_IN_SANDBOX}/gdb_report.py"
# The driver and the modules it imports, mounted together.
DRIVER_FILES = ("gdb_report.py", "exploitable.py")


class _Silent:
    def stage(self, stage: Stage) -> None:
        pass

    def log(self, line: str) -> None:
        pass


class Analyzer:
    """Retraces crashes; keep one per worker process so repository indexes stay warm.

    It holds two podman connections for its whole life: one for the caller's thread and
    one on a background thread, which removes finished containers and runs gdb early.
    Either is made again when the podman service went away. Close it when done.
    """

    @classmethod
    def in_data_dir(
        cls, settings: BuilderSettings, releases: Sequence[ReleaseSettings], data_dir: Path
    ) -> Analyzer:
        """The analyzer keeping its state in retracer's data folder."""
        return cls(settings, releases, builder_dir(data_dir))

    def __init__(
        self,
        settings: BuilderSettings,
        releases: Sequence[ReleaseSettings],
        state_dir: Path,
    ) -> None:
        self.settings = settings
        self.releases = tuple(releases)
        self.state_dir = state_dir
        # Every path handed to podman for a bind mount lives under state_dir: when
        # retracer runs in a container, podman (on the host) resolves those paths, and
        # only the data directory is shared at the same path.
        self._scratch = state_dir / "tmp"
        self._indexes = {r.id: RepositoryIndex(r, state_dir / "index") for r in self.releases}
        self._driver: Path | None = None
        self._store: PackageStore | None = None
        self._checkers: dict[str, SignatureChecker] = {}
        self._sandbox: Sandbox | None = None
        self._background: Background | None = None

    def close(self) -> None:
        """Wait until every container is removed, then disconnect from podman."""
        self._disconnect()
        if self._background is not None:
            self._background.close()
            self._background = None

    def __enter__(self) -> Analyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> PackageStore:
        """The store of unpacked packages, opened on first use (not in the constructor:
        a server process that never retraces needs none)."""
        if self._store is None:
            self._store = PackageStore(
                self.state_dir / "store",
                self.settings.package_store_max_mib << 20,
                workers=self.settings.unpack_workers,
            )
        return self._store

    def index(self, release: ReleaseSettings) -> RepositoryIndex:
        return self._indexes[release.id]

    def result_key(self, problem_dir: Path) -> str | None:
        """``<release id>:<metadata revision>`` of the crash in ``problem_dir``: an
        identical core with the same key has the same result. None when the crash or
        the repository cannot say (the retrace then tells why)."""
        try:
            problem = read_problem(problem_dir, self.releases)
            return f"{problem.release.id}:{self.index(problem.release).revision()}"
        except (BuilderError, SyncError):
            return None

    def retrace(self, problem_dir: Path, observer: RetraceObserver | None = None) -> RetraceResult:
        """Produce the backtrace of the crash in ``problem_dir``.

        Raises:
            BuilderError: the crash, the sandbox or gdb failed; ``reason`` says how.
            SyncError: the release is unknown or its repository lacks a package.
        """
        run = _Run(observer or _Silent())
        # Separates gdb's text from its JSON; random, so that no core can forge it.
        marker = f"----- retracer report {secrets.token_hex(16)} -----"
        run.stage(Stage.ANALYZING)
        with run.step("reading the problem directory"):
            problem = read_problem(problem_dir, self.releases)
        run.log(f"release {problem.release.id}, executable {problem.executable}")
        with self._connection() as (sandbox, background):
            base_images = BaseImages(sandbox, self.settings, self.state_dir)
            environments = Environments(base_images, self.store, self.state_dir)
            with run.step("preparing the base image"):
                base = base_images.base_image(problem.release)
            with _readable_core(problem.core, self._scratch) as core, ExitStack() as runs:

                def start_gdb() -> EarlyRun:
                    """gdb's container, started now; it waits for its environment."""
                    spec = self._gdb_spec(environments, base, core, problem, marker)
                    return runs.enter_context(EarlyRun(sandbox, background, spec, self._scratch))

                def start_over(wrong: EarlyRun) -> EarlyRun:
                    """Stop a run in the wrong environment; a new one waits for the right."""
                    wrong.discard()
                    run.log("this crash needs another environment; the early gdb run was stopped")
                    return start_gdb()

                guess = environments.last_used_for(problem.program, problem.release)
                if guess is not None:
                    # Released after the run in it is stopped (the stack unwinds in turn).
                    runs.callback(guess.close)
                gdb_run = start_gdb()
                if guess is not None:
                    gdb_run.enter(guess, environments.root_links(guess))
                    run.log(
                        f"gdb started early in environment {guess.name},"
                        " which the last crash of this program needed"
                    )
                with run.step("inspecting the core"):
                    modules = inspect_core(sandbox, base, core, problem.executable, self._timeout)
                run.log(f"{len(modules)} modules with build-ids mapped")
                with run.step("resolving packages"):
                    crashed, resolved = self._resolve(problem, modules)
                    packages = _packages(crashed, resolved)
                    index = self.index(problem.release)
                    packages += sorted(index.debug_companions(packages))
                    files = index.package_files(packages)
                for package in packages:
                    if package not in files:
                        raise PackageNotFound(package.nevra, problem.release.id)
                fetched = fetch_missing_debuginfo(
                    self.settings, self._debuginfod_cache, resolved, run
                )
                for line in _missing_lines(resolved, fetched):
                    run.log(line)
                package_set = PackageSet(problem.release.parsed_id, tuple(packages))
                run.stage(Stage.PREPARING)
                if gdb_run.environment is not None and (
                    # It started before this debuginfo was there, or in other packages.
                    any(f.fresh for f in fetched.values())
                    or set(gdb_run.environment.holding.trees) != {p.nevra for p in packages}
                ):
                    gdb_run = start_over(gdb_run)
                with run.step("unpacking packages"):
                    holding = self.store.hold(files, self._check(problem.release))
                with holding:
                    with run.step("composing the environment"):
                        environment = environments.compose(
                            problem.release, holding, _from_base(problem.executable, modules)
                        )
                    if holding.unpacked:
                        run.log(f"unpacked into the store: {' '.join(map(str, holding.unpacked))}")
                    else:
                        run.log(f"environment {environment.name} reused from the store")
                    if gdb_run.environment is None:
                        gdb_run.enter(environment, environments.root_links(environment))
                    elif gdb_run.environment.name != environment.name:
                        gdb_run = start_over(gdb_run)
                        gdb_run.enter(environment, environments.root_links(environment))
                    run.stage(Stage.GENERATING)
                    with run.step("running gdb"):
                        output = gdb_run.take()
                        if output is None:  # its container failed: run it again, here
                            spec = self._gdb_spec(environments, base, core, problem, marker)
                            with LateRoot(self._scratch) as root:
                                root.fill(environments.root_links(environment))
                                output = sandbox.run(root.given_to(spec))
                    environments.remember_for(problem.program, problem.release, environment)
                with run.step("evicting packages"):
                    self.store.evict()
            run.stage(Stage.CLEANING)
        try:
            text, data = split_output(output.stdout, marker)
        except SandboxFailed as error:
            said = [line for line in output.stderr.splitlines() if line.strip()][-1:]
            log.warning("gdb: %s; its last words: %s", error.reason, said)
            raise
        report = build_report(
            data,
            Facts(
                release=problem.release.id,
                executable=problem.executable,
                package=crashed.nevra,
                component=crashed.name,
                mapped=tuple(modules),
                resolved=resolved,
                packages=tuple(p.nevra for p in package_set.packages),
                debuginfo_sources=debuginfo_sources(resolved, fetched),
                environment_cached=environment.cached,
            ),
        )
        return RetraceResult(
            release_id=problem.release.id,
            executable=problem.executable,
            crashed_package=crashed.nevra,
            backtrace=text,
            report=report,
            package_set=package_set,
            modules=resolved,
            environment_image=environment.image,
            environment=environment.name,
            environment_cached=environment.cached,
            steps=tuple(run.timings),
        )

    def _check(self, release: ReleaseSettings) -> PackageCheck | None:
        """The signature check of the release's packages, if it has keys."""
        if not release.signing_keys:
            return None
        if release.id not in self._checkers:
            self._checkers[release.id] = SignatureChecker(release.signing_keys)
        return self._checkers[release.id].check

    @property
    def _debuginfod_cache(self) -> Path:
        return self.state_dir / "debuginfod"

    @property
    def _timeout(self) -> float:
        return self.settings.limits.gdb_timeout_seconds

    def _resolve(
        self, problem: Problem, modules: Sequence[Module]
    ) -> tuple[Package, tuple[ResolvedModule, ...]]:
        index = self.index(problem.release)
        crashed = index.find(problem.package, problem.arch)
        if crashed is None:
            raise PackageNotFound(problem.package, problem.release.id)
        matches = index.match_build_ids(m.build_id for m in modules)
        resolved = tuple(
            ResolvedModule(m, matches[m.build_id].binary, matches[m.build_id].debuginfo)
            for m in modules
        )
        executable = next((r for r in resolved if r.module.path == problem.executable), None)
        if executable and executable.binary and executable.binary.nvr != crashed.nvr:
            log.warning(
                "package file says %s but the executable comes from %s",
                crashed.nvr,
                executable.binary.nvr,
            )
        return crashed, resolved

    def base_image(self, release: ReleaseSettings) -> str:
        """The release's base image, built first if needed (tools and tests)."""
        with self._connection() as (sandbox, _):
            return BaseImages(sandbox, self.settings, self.state_dir).base_image(release)

    def environment_cache(self) -> StoreUsage:
        """How many packages the store holds and their size, for the operator."""
        return self.store.usage()

    def clean_up(self) -> None:
        """Remove what killed workers left: overdue containers and stale scratch files."""
        with self._connection() as (sandbox, _):
            for name in sandbox.remove_overdue_containers():
                log.warning("removed container %s, left behind by a dead worker", name)
        for name in self.store.clean_up():
            log.warning("removed %s, left in the store's staging area by a dead worker", name)
        cutoff = time.time() - self.settings.limits.install_timeout_seconds * 2
        for scratch in (self._scratch,):
            for entry in scratch.glob("*") if scratch.is_dir() else ():
                if entry.lstat().st_mtime >= cutoff:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)

    @contextmanager
    def _connection(self) -> Iterator[tuple[Sandbox, Background]]:
        """The caller's sandbox and the background, connected; on the way out, every
        container used meanwhile is removed."""
        if self._sandbox is not None and not self._sandbox.reachable:
            self._disconnect()
        background = self._background = self._background or Background(self.settings)
        if self._sandbox is None:
            self._sandbox = Sandbox(self.settings, reaper=background)
        try:
            yield self._sandbox, background
        except (BuilderError, SyncError):
            raise  # the sandbox knows whether the service went away
        except BaseException:
            # Interrupted (a task's deadline, say) maybe mid-request: the connection
            # may hold half a response, so the next use starts a new one.
            self._disconnect()
            raise
        finally:
            background.drain()

    def _disconnect(self) -> None:
        if self._sandbox is not None:
            sandbox, self._sandbox = self._sandbox, None
            sandbox.close()

    def _gdb_driver(self) -> Path:
        """The folder holding the gdb driver and its modules, copied under state_dir
        once per content."""
        if self._driver is None or not self._driver.is_dir():
            package = resources.files("retracer.images")
            sources = {name: package.joinpath(name).read_bytes() for name in DRIVER_FILES}
            digest = hashlib.sha256(b"".join(sources[name] for name in DRIVER_FILES))
            folder = self.state_dir / "drivers" / f"gdb-{digest.hexdigest()[:16]}"
            if not folder.is_dir():
                folder.parent.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(dir=folder.parent))
                for name, source in sources.items():
                    (staging / name).write_bytes(source)
                    os.chmod(staging / name, 0o644)
                os.chmod(staging, 0o755)
                try:
                    os.rename(staging, folder)
                except OSError:  # another worker made it first
                    shutil.rmtree(staging, ignore_errors=True)
            self._driver = folder
        return self._driver

    def _gdb_spec(
        self,
        environments: Environments,
        image: str,
        core: Path,
        problem: Problem,
        marker: str,
    ) -> RunSpec:
        """gdb's run, without its root: see :class:`~retracer.builder.early.LateRoot`."""
        driver = self._gdb_driver()
        limits = self.settings.limits
        cache = debuginfod_cache_mount(self.settings, self._debuginfod_cache)
        return RunSpec(
            image=image,
            # auto-load off before anything is loaded: packages' scripts never run.
            command=[
                "gdb",
                "-nx",
                "-iex",
                "set auto-load off",
                "-batch",
                *cache.gdb_options,
                "-x",
                DRIVER_IN_SANDBOX,
            ],
            step="gdb",
            timeout=self._timeout,
            mounts=[
                BindMount(core, CORE_IN_SANDBOX),
                BindMount(driver, DRIVER_DIR_IN_SANDBOX),
                *environments.gdb_mounts(),
                *cache.mounts,
            ],
            environment={
                "RETRACER_CORE": CORE_IN_SANDBOX,
                "RETRACER_EXECUTABLE": problem.executable,
                "RETRACER_SYSROOT": VIEW_IN_SANDBOX,
                "RETRACER_MARKER": marker,
                "RETRACER_TEXT_CAP": str(limits.gdb_text_max_mib << 20),
                "HOME": "/tmp",
            },
            # The text is capped by the driver; the JSON gets as much again.
            max_stdout_bytes=limits.gdb_text_max_mib << 21,
        )


class _Run:
    """Reports stages to the observer and times each step into the log."""

    def __init__(self, observer: RetraceObserver) -> None:
        self.observer = observer
        self.timings: list[StepTiming] = []

    def stage(self, stage: Stage) -> None:
        self.observer.stage(stage)
        self.log(stage.value)

    def log(self, line: str) -> None:
        log.debug(line)
        self.observer.log(line)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - started
            self.timings.append(StepTiming(name, seconds))
            self.log(f"{name}: {seconds:.2f} s")


def _from_base(executable: str, modules: Sequence[Module]) -> dict[str, str]:
    """Where the view finds each mapped file no package of the crash ships by that
    path: through the build-id link a package ships (a library mapped as /lib64/x
    and packaged as /usr/lib64/x), else the same path in the base image."""
    paths = {m.path: build_id_link(m.build_id, "binary") for m in modules}
    paths.setdefault(executable, executable)
    return paths


def _packages(crashed: Package, resolved: Sequence[ResolvedModule]) -> list[Package]:
    packages = {crashed}
    for module in resolved:
        packages.update(p for p in (module.binary, module.debuginfo) if p is not None)
    return sorted(packages)


def _missing_lines(
    resolved: Sequence[ResolvedModule], fetched: dict[str, FetchedDebuginfo]
) -> Iterator[str]:
    for r in resolved:
        module = f"{r.module.path} (build-id {r.module.build_id})"
        if r.binary is None:
            yield f"no package in the repository ships module {module}"
        elif r.debuginfo is None and r.module.build_id not in fetched:
            yield f"no debuginfo for module {module}"


@contextmanager
def _readable_core(core: Path, scratch_dir: Path) -> Iterator[Path]:
    """The core as a file gdb's unprivileged user can read.

    Kernel cores are 0600 root; the sandbox user is ``nobody``. A world-readable core
    is used as it is (the spool keeps it in a private directory); otherwise a private
    copy is made readable.
    """
    if core.stat().st_mode & 0o004:
        yield core
        return
    scratch_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="core-", dir=scratch_dir))
    try:
        copy = scratch / "coredump"
        shutil.copyfile(core, copy)
        os.chmod(copy, 0o644)
        yield copy
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
