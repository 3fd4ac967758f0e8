"""The one store interface, proved on both backends by the same tests.

Each test runs on SQLite (a file under tmp_path) and on PostgreSQL (a fresh database
in a private cluster). ``stores()`` opens another connection to the same store, as
another process or host would.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from retracer.server.config import StoreSettings
from retracer.server.errors import StoreUnavailable, TaskNotFound
from retracer.server.tasks import Stage, TaskState, TaskStore, Total, open_store
from retracer.server.tasks.migrations import MIGRATIONS
from testing.postgres_service import PostgresCluster

Opener = Callable[[], TaskStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "sqlite":
        settings = StoreSettings()
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        settings = StoreSettings(backend="postgresql", dsn=cluster.new_database())
    opened: list[TaskStore] = []

    def open_one() -> TaskStore:
        store = open_store(settings, tmp_path / "data", busy_seconds=2)
        opened.append(store)
        return store

    request.addfinalizer(lambda: [store.close() for store in opened])
    return open_one


def test_a_task_is_stored_claimed_and_finished(stores: Opener) -> None:
    store = stores()
    assert store.insert("100000001", "hash", core_sha256="c0re", arch="x86_64")
    assert not store.insert("100000001", "other")  # the id is taken
    task = store.get("100000001")
    assert (task.state, task.stage, task.arch, task.attempts) == (
        TaskState.QUEUED, Stage.QUEUED, "x86_64", 0,
    )  # fmt: skip
    assert store.queued() == [("100000001", "x86_64")]
    claimed = stores().claim("100000001", 60, owner="host-a/1/1")
    assert claimed is not None and claimed.state is TaskState.RUNNING and claimed.attempts == 1
    store.set_stage("100000001", Stage.GENERATING)
    assert store.get("100000001").stage is Stage.GENERATING
    assert not store.finish("100000001", True, None, owner="host-b/1/1")  # not the owner
    assert store.finish("100000001", True, None, owner="host-a/1/1")
    assert not store.finish("100000001", False, "again")  # finished tasks never change
    task = store.get("100000001")
    assert (task.state, task.stage, task.reason) == (
        TaskState.FINISHED_SUCCESS, Stage.FINISHING, None,
    )  # fmt: skip
    assert store.totals() == {Total.CREATED: 1, Total.FINISHED_SUCCESS: 1}
    with pytest.raises(TaskNotFound):
        store.get("999999999")


def test_only_one_of_many_claims_wins(stores: Opener) -> None:
    stores().insert("100000002", "hash")
    contenders = [stores() for _ in range(6)]
    start = threading.Barrier(len(contenders))
    won: list[str] = []

    def claim(store: TaskStore, owner: str) -> None:
        start.wait()
        if store.claim("100000002", 60, owner=owner) is not None:
            won.append(owner)

    threads = [
        threading.Thread(target=claim, args=(store, f"host/{n}/x"))
        for n, store in enumerate(contenders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert stores().get("100000002").attempts == 1


def test_a_lease_runs_out_and_another_worker_takes_the_task(stores: Opener) -> None:
    store = stores()
    store.insert("100000003", "hash")
    now = time.time()
    assert store.claim("100000003", 60, now=now, owner="first") is not None
    assert store.claim("100000003", 60, now=now + 30, owner="second") is None  # held
    assert store.renew("100000003", 60, owner="first", now=now + 30)
    assert store.release_expired(now=now + 60) == []  # renewed to now + 90
    assert store.release_expired(now=now + 91) == ["100000003"]
    task = store.get("100000003")
    assert (task.state, task.stage) == (TaskState.QUEUED, Stage.QUEUED)
    assert store.claim("100000003", 60, now=now + 92, owner="second") is not None
    assert not store.renew("100000003", 60, owner="first", now=now + 93)
    assert store.running_owners() == {"100000003": "second"}
    assert store.release("100000003", "second")
    assert store.get("100000003").attempts == 2


def test_a_reserved_task_is_neither_queued_nor_claimable(stores: Opener) -> None:
    store = stores()
    now = time.time()
    store.insert("100000004", "hash", now=now, reserve_seconds=60)
    assert store.queued_ids(now=now + 1) == []
    assert store.claim("100000004", 60, now=now + 1) is None
    store.admitted("100000004")
    assert store.queued_ids(now=now + 1) == ["100000004"]
    store.insert("100000005", "hash", now=now, reserve_seconds=60)
    store.forget("100000005")
    assert not store.exists("100000005")
    assert store.totals()[Total.CREATED] == 1


def test_queue_positions_count_per_architecture(stores: Opener) -> None:
    store = stores()
    for number, arch in enumerate(("x86_64", "aarch64", "x86_64", "aarch64", "aarch64")):
        store.insert(f"20000000{number}", "hash", now=1000.0 + number, arch=arch)
    assert [store.queue_position(f"20000000{n}") for n in range(5)] == [1, 1, 2, 2, 3]
    assert store.count_by_state()[TaskState.QUEUED] == 5
    assert store.active_count() == 5


def test_passwords_rotate_once_and_are_remembered_as_spent(stores: Opener) -> None:
    store = stores()
    store.insert("100000006", "first")
    assert store.rotate_password("100000006", "first", "second")
    assert not stores().rotate_password("100000006", "first", "third")  # already rotated
    assert store.password_hash("100000006") == "second"
    assert store.is_spent("100000006", "first") and not store.is_spent("100000006", "second")
    store.delete("100000006")
    assert not store.is_spent("100000006", "first")


def test_workers_say_what_they_serve(stores: Opener) -> None:
    store = stores()
    store.beat("a", now=1000.0, arches=("x86_64", "i386"), releases=("testos-1-x86_64",))
    store.beat("b", now=1000.0, arches=("aarch64",))
    store.beat("c", now=900.0, arches=("s390x",))
    live = store.live_workers(since=950.0)
    assert [(w.name, w.arches, w.releases) for w in live] == [
        ("a", ("x86_64", "i386"), ("testos-1-x86_64",)),
        ("b", ("aarch64",), ()),
    ]
    store.stop_beating("a")
    assert store.workers_seen_since(950.0) == 1


def test_statistics_put_each_task_in_its_hour(stores: Opener) -> None:
    store = stores()
    hour = 3600 * 500_000
    # 2.3 hours before the current hour's start is 20.7 hours into the chart: a rounding
    # cast would put it in bucket 21, but it belongs in 20.
    store.insert("300000001", "hash", now=hour - 2.3 * 3600)
    store.insert("300000002", "hash", now=hour + 10)
    store.claim("300000002", 60, now=hour + 11)
    store.record_retrace("300000002", "testos-1-x86_64", "x86_64", False, (("gdb", 0.5),))
    store.finish("300000002", False, "gdb failed")
    stats = store.statistics(now=hour + 20)
    assert stats.created_per_hour[-1] == 1
    assert stats.created_per_hour[20] == 1
    assert stats.failure_reasons == (("gdb failed", 1),)
    assert stats.per_arch == (("x86_64", 1),)
    assert stats.queued == 1 and stats.failed == 1


def test_results_of_identical_cores_are_found(stores: Opener) -> None:
    store = stores()
    store.insert("400000001", "hash", core_sha256="abc")
    store.claim("400000001", 60)
    store.set_result_key("400000001", "testos:1")
    store.finish("400000001", True, None)
    store.insert("400000002", "hash", core_sha256="abc")
    assert store.core_sha256("400000002") == "abc"
    assert store.find_result("abc", "testos:1", "400000002") == "400000001"
    assert store.find_result("abc", "testos:2", "400000002") is None
    store.count_reuse()
    assert store.totals()[Total.REUSED] == 1


def test_the_schema_is_migrated_once_by_many_openers(stores: Opener) -> None:
    openers = [threading.Thread(target=stores) for _ in range(4)]
    for thread in openers:
        thread.start()
    for thread in openers:
        thread.join()
    store = stores()
    with store._read() as db:
        versions = [row[0] for row in db.rows("SELECT version FROM schema_version")]
    assert sorted(versions) == [m.version for m in MIGRATIONS]


# Backend-specific behaviour


def test_a_claim_skips_a_row_another_host_is_claiming(postgres: PostgresCluster) -> None:
    """A claim never waits behind another host's transaction on the same task: with
    SKIP LOCKED it answers "not claimable" at once, where a plain lock would wait."""
    dsn = postgres.new_database()
    store = open_store(StoreSettings(backend="postgresql", dsn=dsn), Path("/nonexistent"), 2)
    store.insert("500000001", "hash")
    with psycopg.connect(dsn) as other:
        other.execute("SELECT * FROM tasks WHERE id = '500000001' FOR UPDATE")
        assert store.claim("500000001", 60) is None  # no lock timeout, no error
    assert store.claim("500000001", 60) is not None
    store.close()


def test_a_sqlite_file_of_an_earlier_release_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "data" / "tasks.db"
    path.parent.mkdir()
    legacy = sqlite3.connect(path)
    legacy.executescript(
        """
        CREATE TABLE tasks (id TEXT PRIMARY KEY, state TEXT NOT NULL, stage TEXT NOT NULL,
            created REAL NOT NULL, queued REAL NOT NULL, finished REAL, reason TEXT,
            password_hash TEXT NOT NULL, lease_until REAL, attempts INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE worker_heartbeats (worker TEXT PRIMARY KEY, seen REAL NOT NULL);
        INSERT INTO tasks VALUES ('600000001', 'RUNNING', 'Generating backtrace', 1, 1, NULL,
            NULL, 'h', 5, 1);
        INSERT INTO tasks VALUES ('600000002', 'FINISHED_SUCCESS', 'Finishing task', 1, 1, 2,
            NULL, 'h', NULL, 1);
        INSERT INTO totals VALUES ('created', 2), ('finished_success', 1);
        """
    )
    legacy.close()
    store = open_store(StoreSettings(), path.parent)
    assert store.get("600000001").stage is Stage.GENERATING
    assert store.get("600000002").stage is Stage.FINISHING
    assert store.get("600000001").arch is None
    assert store.totals() == {Total.CREATED: 2, Total.FINISHED_SUCCESS: 1}
    store.close()


def test_an_unreachable_postgresql_is_one_plain_error(tmp_path: Path) -> None:
    settings = StoreSettings(backend="postgresql", dsn=f"host={tmp_path} dbname=none user=x")
    with pytest.raises(StoreUnavailable) as caught:
        open_store(settings, tmp_path, busy_seconds=1)
    assert caught.value.reason == "The task store is unavailable; try again in a minute."
    assert str(tmp_path) in caught.value.detail


def test_a_restarted_postgresql_is_reconnected_to() -> None:
    cluster = PostgresCluster()
    try:
        cluster.start()
        store = open_store(StoreSettings(backend="postgresql", dsn=cluster.dsn()), Path("/"), 2)
        store.insert("700000001", "hash")
        cluster.stop()
        with pytest.raises(StoreUnavailable):
            store.get("700000001")
        cluster.start()
        assert store.get("700000001").state is TaskState.QUEUED  # nothing was lost
        store.close()
    finally:
        cluster.remove()
