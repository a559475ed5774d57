"""Parts on disk: written under a temporary name, published durably, checked against their
manifests.

Publishing is ordered so that a crash at any point leaves either the old state or a part the
next run recognises as unfinished: the Parquet file is fsynced, renamed into place, its folder
fsynced; only then is the manifest written the same way. A Parquet file without a valid
manifest is therefore never a finished part, whatever else is on disk.
"""

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from . import ExportBusy, schema

# Rows per Parquet row group: large enough for column chunks of a few MB (what readers scan
# efficiently; DuckDB splits its work by row group), small enough that the export holds one
# group in memory (~50 MB of Arrow data) whatever the part's size. By count, not by page read,
# so that a part written again over the same rows is the same bytes.
ROW_GROUP_ROWS = 131_072
COMPRESSIONS = ("zstd", "snappy", "gzip", "none")
FORMAT = "receiver-events-export/1"
LOCK_NAME = ".lock"
TEMPORARY_SUFFIX = ".tmp"
TIME_COLUMNS = ("created_at", "received_at")


@dataclass
class Written:
    """A finished temporary file: what the manifest will say about it."""

    temporary: Path
    rows: int
    bounds: dict  # column: [min, max] as datetimes


@dataclass
class PartWriter:
    """Arrow batches in, row groups of ROW_GROUP_ROWS out, to a temporary file in `folder`."""

    folder: Path
    temporary_name: str
    compression: str = "zstd"
    rows: int = 0
    pending: list = field(default_factory=list)
    pending_rows: int = 0
    bounds: dict = field(default_factory=lambda: {c: [None, None] for c in TIME_COLUMNS})

    def __post_init__(self):
        self.temporary = self.folder / f".{self.temporary_name}{TEMPORARY_SUFFIX}"
        self.writer = pq.ParquetWriter(
            self.temporary, schema.SCHEMA, compression=self.compression, write_statistics=True
        )

    def add(self, batch: pa.RecordBatch) -> None:
        """Queue a batch; write every full row group."""
        if not batch.num_rows:
            return
        for column in TIME_COLUMNS:
            low, high = schema.time_bounds(batch, column)
            current = self.bounds[column]
            current[0] = low if current[0] is None else min(current[0], low)
            current[1] = high if current[1] is None else max(current[1], high)
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.rows += batch.num_rows
        while self.pending_rows >= ROW_GROUP_ROWS:
            self._write(ROW_GROUP_ROWS)

    def close(self) -> Written:
        """Write what is queued and close the file."""
        if self.pending_rows:
            self._write(self.pending_rows)
        self.writer.close()
        return Written(self.temporary, self.rows, self.bounds)

    def __enter__(self):
        return self

    def __exit__(self, error_type, error, traceback):
        # Whatever went wrong (an interruption too), no half-written file stays behind.
        if error_type is not None:
            self.abort()

    def abort(self) -> None:
        """Close and delete the temporary file (after an error)."""
        with contextlib.suppress(Exception):
            self.writer.close()
        self.temporary.unlink(missing_ok=True)

    def _write(self, rows: int) -> None:
        table = pa.Table.from_batches(self.pending, schema.SCHEMA)
        self.writer.write_table(table.slice(0, rows), row_group_size=rows)
        rest = table.slice(rows)
        self.pending = rest.to_batches() if rest.num_rows else []
        self.pending_rows = rest.num_rows


def manifest_name(part_name: str) -> str:
    """`part-00001.parquet` -> `_part-00001.json`: hidden from Hive-style readers."""
    return f"_{part_name.removesuffix('.parquet')}.json"


def publish(written: Written, folder: Path, part_name: str, source: dict, compression: str):
    """Move the temporary file to `part_name` and write its manifest, each step durable; the
    manifest."""
    final = folder / part_name
    digest = sha256_of(written.temporary)
    fsync_path(written.temporary)
    os.replace(written.temporary, final)
    fsync_path(folder)
    manifest = {
        "format": FORMAT,
        "file": part_name,
        "rows": written.rows,
        "bytes": final.stat().st_size,
        "sha256": digest,
        "min_created_at": _iso(written.bounds["created_at"][0]),
        "max_created_at": _iso(written.bounds["created_at"][1]),
        "min_received_at": _iso(written.bounds["received_at"][0]),
        "max_received_at": _iso(written.bounds["received_at"][1]),
        "source": source,
        "receiver_version": __version__,
        "compression": compression,
        "columns": schema.describe(),
    }
    write_durably(folder / manifest_name(part_name), json.dumps(manifest, indent=2) + "\n")
    return manifest


def check(folder: Path, part_name: str) -> tuple[dict | None, str | None]:
    """(manifest, None) if the part's manifest matches its file, else (manifest or None, what
    is wrong)."""
    path = folder / manifest_name(part_name)
    try:
        manifest = json.loads(path.read_text())
        rows, digest = manifest["rows"], manifest["sha256"]
    except FileNotFoundError:
        return None, f"{part_name} has no manifest (an interrupted export)"
    except (ValueError, KeyError, TypeError):
        return None, f"{path.name} is not a manifest of this export"
    if manifest.get("format") != FORMAT or manifest.get("file") != part_name:
        return None, f"{path.name} is not a manifest of this export"
    if manifest.get("columns") != schema.describe():
        return manifest, f"{part_name} has other columns than this receiver exports"
    parquet = folder / part_name
    if not parquet.exists():
        return manifest, f"{part_name} is missing"
    if sha256_of(parquet) != digest:
        return manifest, f"{part_name}: sha256 differs from its manifest"
    try:
        stored = pq.read_metadata(parquet).num_rows
    except (OSError, pa.ArrowException) as error:
        return manifest, f"{part_name} is not readable Parquet: {error}"
    if stored != rows:
        return manifest, f"{part_name} holds {stored} rows, its manifest says {rows}"
    return manifest, None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entries to disk (a rename is durable once its folder is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Replace `path` with `text`: a reader (or a crash) sees the old file or the new, whole."""
    temporary = path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")
    with open(temporary, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    fsync_path(path.parent)


def remove_temporaries(folder: Path) -> None:
    """Delete what an interrupted run left under temporary names."""
    for path in folder.glob(f".*{TEMPORARY_SUFFIX}"):
        path.unlink(missing_ok=True)


def remove_part(folder: Path, part_name: str) -> None:
    """Delete a part, its manifest first: a Parquet file left alone is an unfinished part."""
    (folder / manifest_name(part_name)).unlink(missing_ok=True)
    (folder / part_name).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(directory: Path):
    """Hold the export directory's lock; ExportBusy if another export has it. Two runs at once
    (a cron job that overlaps itself) would each write their own parts of the same rows."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportBusy(f"another export is running in {directory}") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _iso(moment):
    return None if moment is None else moment.isoformat(timespec="microseconds")
