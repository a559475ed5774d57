"""`receiver export`: the events as Parquet files a warehouse loads (DuckDB, BigQuery, Snowflake).

Two layouts, each a tree of parts with a manifest apiece:

- by month (month.py): `DIR/events/month=YYYY-MM/part-NNNNN.parquet`, the month's events in
  the unique key's order, cut into parts by key range. For monthly loads, archives, and the
  proof `receiver prune --require-export` asks for before it drops a month. An export never
  removes an event the database no longer has: a pruned month is only added to (late parts).
- incremental (incremental.py): `DIR/events-feed/part-<from>-<to>.parquet`, the events feed
  (receiver/storage/feed.py) between two positions, and `_cursor`, where the next run starts.
  For loading every few minutes: each event in exactly one part.

A part is published in three durable steps (parts.py): the Parquet file under a temporary name,
renamed into place; then its manifest `_part-….json` (rows, sha256, bounds); then, for the
feed, the cursor. The manifest is the commit: a part without a valid one is redone, by the next
run, over the same rows, under the same name. The manifests begin with `_` so that Spark, Hive,
Athena and Trino, which read every other file of a table's folders, leave them alone.

pyarrow is an optional dependency (`pip install 'receiver[export]'`): only the modules of this
package that write or read Parquet import it, and only once `require_pyarrow` has said it is there.
"""

import importlib

INSTALL_HINT = "pip install 'receiver[export]'"


class ExportError(Exception):
    """An export the receiver will not do as asked (the message says why): exit status 2."""


class ExportBusy(Exception):
    """Another export holds the folder's lock."""


def require_pyarrow() -> None:
    """Raise ExportError, naming the extra to install, unless pyarrow can be imported."""
    try:
        importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise ExportError(f"the export writes Parquet with pyarrow: {INSTALL_HINT}") from None
