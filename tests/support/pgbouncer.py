"""A real PgBouncer of the test's own, in front of a test database: its configuration in a
directory of its own, a free port, the pool mode and size the test asks for. The `pgbouncer`
binary is the machine's (Debian: `apt-get install pgbouncer`); `PgBouncer.missing()` says why a
test cannot run without it.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import free_port, wait_until

# PgBouncer refuses to run as root; as root the tests run it as this user.
RUN_AS = "postgres"


class PgBouncer:
    """PgBouncer pooling `database_url`'s database under the same name, user and password."""

    def __init__(self, database_url, pool_mode="transaction", pool_size=2, **settings):
        self.directory = Path(tempfile.mkdtemp(prefix="receiver-pgbouncer-"))
        self.port = free_port()
        target = conninfo_to_dict(database_url)
        self.dbname, user = target["dbname"], target.get("user") or "postgres"
        server = {k: target[k] for k in ("host", "port", "password") if target.get(k)}
        server.setdefault("host", "127.0.0.1")
        entry = " ".join(f"{k}={v}" for k, v in {**server, "dbname": self.dbname}.items())
        ini = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": self.directory / "userlist.txt",
            "pool_mode": pool_mode,
            "default_pool_size": pool_size,
            "max_client_conn": 200,
            "logfile": self.directory / "pgbouncer.log",
            "admin_users": user,
            **settings,
        }
        (self.directory / "userlist.txt").write_text(f'"{user}" ""\n')
        (self.directory / "pgbouncer.ini").write_text(
            f"[databases]\n{self.dbname} = {entry}\n\n[pgbouncer]\n"
            + "".join(f"{key} = {value}\n" for key, value in ini.items())
        )
        self.url = make_conninfo(
            "", host="127.0.0.1", port=self.port, dbname=self.dbname, user=user,
            password=target.get("password"),
        )  # fmt: skip
        self.admin_url = make_conninfo(self.url, dbname="pgbouncer")
        as_root = os.geteuid() == 0
        if as_root:
            account = pwd.getpwnam(RUN_AS)
            for path in [self.directory, *self.directory.iterdir()]:
                os.chown(path, account.pw_uid, account.pw_gid)
        self.process = subprocess.Popen(
            [shutil.which("pgbouncer"), str(self.directory / "pgbouncer.ini")],
            user=RUN_AS if as_root else None,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=15)

    @staticmethod
    def missing(database_url=None) -> str | None:
        """Why PgBouncer cannot run here (in front of `database_url`, if given), or None."""
        if shutil.which("pgbouncer") is None:
            return "no pgbouncer binary (Debian: apt-get install pgbouncer)"
        host = conninfo_to_dict(database_url or "").get("host") or ""
        if os.geteuid() == 0 and host.startswith("/"):
            # The embedded server's socket is in a folder only root may enter, and PgBouncer
            # will not run as root: the pass against a server over TCP runs these tests.
            return "PgBouncer, not root, cannot reach the embedded server's socket (TCP needed)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(RUN_AS)
            except KeyError:
                return f"running as root and there is no {RUN_AS} user to run pgbouncer as"
        return None

    def _ready(self):
        if self.process.poll() is not None:
            raise AssertionError(f"pgbouncer exited:\n{self.log()}")
        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def show(self, what):
        """A SHOW of PgBouncer's console (POOLS, SERVERS, CLIENTS, ...) as dicts."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            cursor = conn.execute(f"SHOW {what}", prepare=False)
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def console(self, command):
        """Run a command of PgBouncer's console (RECONNECT, PAUSE, RESUME, ...)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(command, prepare=False)

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
