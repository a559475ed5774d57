"""A local PostgreSQL for development and tests, from the `pgserver` wheel (no install needed)."""

import warnings
from pathlib import Path


def start_embedded(data_dir: Path, cleanup_mode="stop"):
    """Start (or reuse) a PostgreSQL cluster in `data_dir`; return the pgserver handle.

    With cleanup_mode="stop" it stops when the last process using it exits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR; harmless
        import pgserver

        data_dir.mkdir(parents=True, exist_ok=True)
        return pgserver.get_server(data_dir.resolve(), cleanup_mode=cleanup_mode)
