"""A local PostgreSQL for development and tests, from the `pgserver` wheel (no install needed).

pgserver's public names are used (`get_server`, one function per PostgreSQL program such as
`pg_ctl`, `utils.PostmasterInfo`), and one private one, the folder of those programs
(`_commands.POSTGRES_BIN_PATH`, for an interactive psql); its version is pinned in setup.cfg and
tests/unit/test_dependencies.py fails loudly if one of them goes away.
"""

import warnings
from pathlib import Path


def _pgserver():
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR when importing pgserver; harmless, and said
        # here once for every command that starts or finds an embedded server.
        warnings.simplefilter("ignore")
        import pgserver

    return pgserver


def start_embedded(data_dir: Path, cleanup_mode="stop"):
    """Start (or reuse) a PostgreSQL cluster in `data_dir`; return the pgserver handle.

    With cleanup_mode="stop" it stops when the last process using it exits."""
    pgserver = _pgserver()
    data_dir.mkdir(parents=True, exist_ok=True)
    return pgserver.get_server(data_dir.resolve(), cleanup_mode=cleanup_mode)


def running_server_uri(data_dir: Path) -> str | None:
    """The URI of the server running on `data_dir`, or None when none runs there."""
    _pgserver()
    from pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(data_dir.resolve())
    if info is None or not info.is_running():
        return None
    return info.get_uri()


def bin_path(name: str) -> Path:
    """A PostgreSQL program shipped with pgserver (psql, pg_ctl, ...)."""
    _pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH  # private: see the module's docstring

    return Path(POSTGRES_BIN_PATH) / name
