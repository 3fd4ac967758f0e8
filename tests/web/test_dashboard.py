"""The dashboard and /metrics read one Statistics from the task store."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from retracer.server.app import create_app
from retracer.server.config import Config
from retracer.server.statistics import TOTAL, percentile
from retracer.server.tasks import SqliteTaskStore, TaskStore
from testing.server.live import settings_mapping

TOKEN = "dashboard-token"


def sample(metrics: str, name: str) -> float:
    families = text_string_to_metric_families(metrics)
    (value,) = [s.value for family in families for s in family.samples if s.name == name]
    return float(value)


def fill_store(store: TaskStore) -> None:
    """Three tasks: two retraced on x86_64 (one from a cached environment), one failed twice
    for the same reason, one failed for another, one still queued."""
    outcomes = [
        ("100000001", True, None, ("testos-1-x86_64", "x86_64", True, 2.0)),
        ("100000002", True, None, ("testos-1-i686", "i686", False, 8.0)),
        ("100000003", False, "gdb ran out of time", None),
        ("100000004", False, "gdb ran out of time", None),
        ("100000005", False, "no release matches", None),
    ]
    for task_id, success, reason, retrace in outcomes:
        store.insert(task_id, "hash")
        store.claim(task_id, 60)
        if retrace:
            release, arch, cached, gdb_seconds = retrace
            store.record_retrace(task_id, release, arch, cached, (("running gdb", gdb_seconds),))
        store.finish(task_id, success, reason)
    store.insert("100000006", "hash")
    store.record_environment_cache(3, 5 << 20)


def test_dashboard_and_metrics_show_the_same_figures(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    app = create_app(config_factory(settings_mapping(tmp_path, admin_token=TOKEN)))
    store = SqliteTaskStore.in_data_dir(tmp_path / "data")
    fill_store(store)
    store.beat("worker-on-this-host")  # one consumer said it is alive just now
    client = app.test_client()

    page = client.get("/admin", headers={"Authorization": f"Bearer {TOKEN}"})
    metrics = client.get("/metrics").get_data(as_text=True)

    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert re.search(r'id="tasks-today">6<', text)
    assert "retracer_tasks_created_last_day 6.0" in metrics
    assert re.search(r'id="finished">2 succeeded, 3 failed<', text)
    assert re.search(r'id="success-rate">40 %<', text)
    reasons = re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td></tr>", text)
    assert reasons == [("2", "gdb ran out of time"), ("1", "no release matches")]
    assert 'retracer_task_failures{reason="gdb ran out of time"} 2.0' in metrics
    assert ">testos-1-i686: 1<" in text and ">testos-1-x86_64: 1<" in text
    assert 'retracer_retraces_by_arch{arch="i686"} 1.0' in metrics
    assert re.search(r'id="queue">1 waiting, 0 running, 1 worker processes alive', text)
    assert "retracer_workers_alive 1.0" in metrics
    assert "1 from the cache, 1 built (hit rate 50 %)" in text
    assert 'retracer_environments{source="cache"} 1.0' in metrics
    assert re.search(r'id="environment-cache">3 images, 5.0 MiB<', text)
    assert sample(metrics, "retracer_environment_cache_bytes") == 5 << 20
    assert re.search(r"<td>running gdb</td><td>2</td><td>2.00</td><td>8.00</td>", text)
    assert 'retracer_step_seconds{quantile="0.99",step="running gdb"} 8.0' in metrics
    assert f"<td>{TOTAL}</td><td>5</td>" in text
    assert "<svg" in text and "<script" not in text


def test_the_dashboard_refuses_without_the_token(
    config_factory: Callable[..., Config], tmp_path: Path
) -> None:
    client = create_app(config_factory(settings_mapping(tmp_path, admin_token=TOKEN))).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = client.get("/admin", headers=headers)
        assert refused.status_code == 403
        assert 'id="tasks-today"' not in refused.get_data(as_text=True)


def test_percentiles_are_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
