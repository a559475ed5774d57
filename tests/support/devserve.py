"""`receiver serve` in development mode, as a newcomer runs it: banner parsed, probes polled."""

import os
import re
import shlex
import signal
import subprocess
import time

import requests

from support import free_port, wait_until


class DevServe:
    """`RECEIVER serve` (a program path or argv) with no DATABASE_URL, from `cwd`."""

    def __init__(self, program, cwd, state_dir, port=None, extra_env=None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = development_env(state_dir, extra_env)
        command = [*([program] if isinstance(program, str) else program), "serve"]
        self.process = subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{self.port}"],
            cwd=cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.banner = read_until(self.process.stdout, "receiver simulate")
        self.user = re.search(r"^  user +(\S+)$", self.banner, re.M).group(1)
        self.password = re.search(r"^  password +(\S+)$", self.banner, re.M).group(1)
        self.database_url = re.search(r"^  DATABASE_URL +(\S+)$", self.banner, re.M).group(1)
        self.curl = next(line.strip() for line in self.banner.splitlines() if "curl " in line)
        wait_until(self.ready, timeout=40)

    def ready(self):
        if self.process.poll() is not None:
            raise AssertionError(f"receiver serve exited with {self.process.returncode}")
        try:
            return requests.get(self.base + "/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def curl_argv(self):
        """The banner's curl line as an argv."""
        return shlex.split(self.curl)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self.process.stderr.close()


def development_env(state_dir, extra=None):
    """The environment of a newcomer: no database, no credentials, a state dir of the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_"))}
    env.pop("PYTHONPATH", None)
    env.pop("PORT", None)  # a platform's PORT says "deployment": serve would refuse (no --dev)
    env["RECEIVER_STATE_DIR"] = str(state_dir)
    env.update(extra or {})
    return env


def read_until(stream, marker, timeout=60.0):
    """Lines from `stream` up to and including the first that contains `marker`."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError("output ended before {!r}:\n{}".format(marker, "".join(lines)))
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"{marker!r} not printed within {timeout} s")
