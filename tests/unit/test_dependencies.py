"""The dependencies' internals the receiver leans on: fails loudly when an upgrade breaks one.

setup.cfg pins the versions these were checked with (prometheus-client <0.27, pgserver <0.2);
a failure here means that pin must not be lifted before the code is changed.
"""

import os

import pgserver
import pgserver.utils
from pgserver._commands import POSTGRES_BIN_PATH
from prometheus_client import multiprocess, values
from prometheus_client.mmap_dict import MmapedDict


def test_prometheus_value_class_can_be_chosen_again_after_import():
    # receiver.observability.metrics falls back to in-process values by re-picking this.
    assert callable(values.get_value_class)
    assert values.ValueClass is not None
    values.ValueClass = values.get_value_class()


def test_mmaped_dict_reads_and_writes_the_multiprocess_file_format(tmp_path):
    # receiver.observability.metricfiles folds a dead worker's files into an archive with these.
    path = str(tmp_path / "counter_123.db")
    written = MmapedDict(path)
    written.write_value("key", 2.5, 7.0)
    written.close()
    values_read = list(MmapedDict.read_all_values_from_file(path))
    assert [(key, value, timestamp) for key, value, timestamp, _ in values_read] == [
        ("key", 2.5, 7.0)
    ]
    archive = MmapedDict(str(tmp_path / "counter_archive.db"))
    assert archive.read_value("key") == (0.0, 0.0)
    archive.close()
    assert callable(multiprocess.mark_process_dead)
    assert issubclass(multiprocess.MultiProcessCollector, object)


def test_pgserver_names_the_embedded_server_uses_exist():
    # receiver.storage.embedded and the tests' own clusters use these.
    assert callable(pgserver.get_server)
    assert callable(pgserver.pg_ctl)
    assert os.access(POSTGRES_BIN_PATH / "psql", os.X_OK)
    assert hasattr(pgserver.utils.PostmasterInfo, "read_from_pgdata")


def test_every_sub_package_is_packaged():
    """setup.cfg lists the packages (the checkout's migrations/ must not become a top-level
    package of the wheel): a sub-package missing there would be missing from every install."""
    import configparser
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    on_disk = {
        ".".join(init.parent.relative_to(root).parts)
        for init in (root / "receiver").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk | {"receiver.migrations"} == listed


def test_gthread_internals_the_receivers_worker_uses_exist():
    # receiver.web.worker: the arrival is noted in enqueue_req; the headers' deadline is armed
    # in ThreadWorker.handle once a new connection's first bytes are there (TConn.wait_for_data,
    # or parked with _DEFER), and disarmed when handle_request (or handle_http2) starts.
    import inspect

    from gunicorn.workers import gthread

    assert list(inspect.signature(gthread.ThreadWorker.handle).parameters) == ["self", "conn"]
    assert list(inspect.signature(gthread.ThreadWorker.handle_request).parameters) == [
        "self",
        "req",
        "conn",
    ]
    assert list(inspect.signature(gthread.ThreadWorker.enqueue_req).parameters) == ["self", "conn"]
    assert list(inspect.signature(gthread.ThreadWorker.handle_http2).parameters) == [
        "self",
        "conn",
    ]
    assert list(inspect.signature(gthread.ThreadWorker.finish_request).parameters) == [
        "self",
        "conn",
        "fs",
    ]
    assert "self.nr_conns -= 1" in inspect.getsource(gthread.ThreadWorker.finish_request)
    assert "timeout" in inspect.signature(gthread.util.close_graceful).parameters
    assert callable(gthread.TConn.wait_for_data)
    assert not hasattr(gthread.TConn, "__slots__")  # the worker notes the queueing time on it
    assert isinstance(gthread.DEFAULT_WORKER_DATA_TIMEOUT, float)
    assert gthread._DEFER is not None
    for attribute in ("initialized", "data_ready", "sock"):
        assert attribute in inspect.getsource(gthread.TConn.__init__)


def test_gunicorn_responses_can_be_closed_from_the_app():
    # receiver.web.client.let_go: start_response is a method of gunicorn's Response, whose
    # force_close() makes the answer say `Connection: close`.
    from gunicorn.http.wsgi import Response

    assert callable(Response.force_close)
    assert callable(Response.start_response)
