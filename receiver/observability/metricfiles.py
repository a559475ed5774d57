"""Prometheus multiprocess files: reading them for a scrape, folding in dead workers' files.

Kept apart from `receiver.observability.metrics`, which declares the metrics: gunicorn's master
imports this module in its child_exit hook, and declaring metrics there would give the master
files too.
"""

import os

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict


class WorkerFilesCollector(multiprocess.MultiProcessCollector):
    """The workers' files, summed; a scrape that races `retire_worker` is read again."""

    def collect(self):
        for attempt in range(3):
            try:
                return list(super().collect())
            except FileNotFoundError:  # a dead worker's file was folded away mid-read
                if attempt == 2:
                    raise
        return []


def retire_worker(pid, directory=None):
    """Fold a dead worker's metric files into per-type archive files (gunicorn's child_exit).

    Its counters and histograms must keep counting in the totals, but one set of files per
    worker ever started would pile up with every restart; folded, the directory holds the
    live workers' files and one archive per type. Live gauges are simply dropped."""
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    multiprocess.mark_process_dead(pid, directory)
    stats = os.statvfs(directory)
    if stats.f_bavail * stats.f_frsize < 4 * 1024 * 1024:
        # Writing the archive's mmapped pages on a full disk would SIGBUS the gunicorn master.
        # Leave the dead worker's files as they are: they still count, they just stay.
        return
    for prefix, combine in (("counter", _add), ("histogram", _add), ("gauge_max", max)):
        dead = os.path.join(directory, f"{prefix}_{pid}.db")
        if not os.path.exists(dead):
            continue
        archive = MmapedDict(os.path.join(directory, f"{prefix}_archive.db"))
        try:
            for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(dead):
                current, _ = archive.read_value(key)
                archive.write_value(key, combine(current, value), timestamp)
        finally:
            archive.close()
        # Added to the archive first, then removed: a scrape in between may count it twice
        # (for microseconds), never lose it.
        os.remove(dead)


def _add(a, b):
    return a + b
