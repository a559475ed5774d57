"""The container image of deploy/container/Containerfile, built and run with real podman.

No registry is needed: the base image is made here from Debian packages (debootstrap) and
imported into podman's storage, once per package list (its tag is their hash), with the
debootstrap tarball kept in ~/.cache/receiver/ should podman's storage be wiped. podman runs with
runc, the host's network and the file and process limits it already has (on these machines crun
refuses the cgroups, and raising a limit is not permitted).
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from support import ROOT

CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "receiver"
SUITE = "bookworm"  # Debian 12: python3 is 3.11, as python:3.11-slim's
MIRROR = os.environ.get("RECEIVER_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# One base for both stages: python3-venv makes the build stage's virtualenv (its pip fetches
# the rest from PyPI); the final stage copies only that virtualenv.
PACKAGES = ("python3", "python3-venv")
# What the base leaves out, to keep the image small: apt's caches, documentation, translations.
TRIMMED = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
           "usr/share/info", "usr/share/locale")  # fmt: skip
IMAGE = "localhost/receiver-test:latest"
BUILD_STAGE = "localhost/receiver-test-build:latest"
PODMAN = ("podman", "--runtime", "runc")
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
TOOLS = ("podman", "runc", "debootstrap")


def missing_tools() -> str | None:
    """Why the image cannot be built and run here, or None."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return (
            f"{', '.join(absent)} not installed (apt-get install podman runc debootstrap): the "
            "container image is built and run with them"
        )
    if os.geteuid() != 0:
        return "debootstrap and podman's runc runtime need root here: the image test runs as root"
    return None


def run(argv, timeout=600, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited with {result.returncode}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def podman(*args, **kwargs) -> subprocess.CompletedProcess:
    return run([*PODMAN, *args], **kwargs)


def base_image() -> str:
    """The Debian base image in podman's storage, made (or re-imported) when missing."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(PACKAGES)} {TRIMMED}".encode()).hexdigest()
    tag = f"localhost/receiver-test-base:{key[:16]}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    tarball = CACHE / f"container-base-{key[:16]}.tar"
    if not tarball.exists():
        debootstrap(tarball)
    podman("import", str(tarball), tag)
    return tag


def build_base_image(base: str) -> str:
    """`base` plus this host's CA certificates for pip, for the build stage alone (the final
    stage stays on `base`): where HTTPS to PyPI goes through a proxy that signs with its own
    CA, pip in the build trusts what pip on the host trusts."""
    bundle = Path(
        os.environ.get("PIP_CERT")
        or os.environ.get("SSL_CERT_FILE")
        or "/etc/ssl/certs/ca-certificates.crt"
    )
    if not bundle.is_file():
        return base
    certificates = bundle.read_bytes()
    key = hashlib.sha256(base.encode() + b"\0" + certificates).hexdigest()[:16]
    tag = f"localhost/receiver-test-build-base:{key}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="receiver-build-base-") as context:
        (Path(context) / "host-ca.crt").write_bytes(certificates)
        (Path(context) / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/host-ca.crt\n")
        (Path(context) / "Containerfile").write_text(
            f"FROM {base}\n"
            "COPY host-ca.crt /etc/ssl/certs/host-ca.crt\n"
            "COPY pip.conf /etc/pip.conf\n"
        )
        podman("build", "--network", "host", *LIMITS, "-t", tag, context)
    return tag


def debootstrap(tarball: Path):
    """A minimal Debian with PACKAGES, as a tarball of its root (written whole, then renamed)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="receiver-debootstrap-", dir=CACHE))
    try:
        root = work / "root"
        run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
             str(root), MIRROR],
            timeout=900,
        )  # fmt: skip
        for path in TRIMMED:
            for entry in (root / path).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        partial = work / "base.tar"
        run(["tar", "-C", str(root), "-cf", str(partial), "."])
        partial.replace(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_image(base: str) -> str:
    """Build the Containerfile from the checkout on `base` (podman's layer cache reuses every
    step whose inputs did not change: the dependencies are installed again only when setup.cfg
    changes); return the image's tag. The build stage is tagged too, which keeps its cached
    layers; the images this replaces are removed, so storage does not grow with every change."""
    arguments = [
        "build", "--network", "host", *LIMITS,
        "--format", "docker",  # the OCI format has no HEALTHCHECK
        "--build-arg", f"BASE_IMAGE={base}",
        "--build-arg", f"BUILD_BASE_IMAGE={build_base_image(base)}",
        "-f", str(CONTAINERFILE),
    ]  # fmt: skip
    replaced = {image_id(IMAGE), image_id(BUILD_STAGE)} - {None}
    podman(*arguments, "--target", "build", "-t", BUILD_STAGE, str(ROOT), timeout=900)
    podman(*arguments, "-t", IMAGE, str(ROOT), timeout=900)
    replaced -= {image_id(IMAGE), image_id(BUILD_STAGE)}
    if replaced:  # untagged by this build; their layers of their own go with them
        podman("rmi", *replaced, check=False)
    return IMAGE


def image_id(tag) -> str | None:
    result = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def image_config(image: str) -> dict:
    (info,) = json.loads(podman("image", "inspect", image).stdout)
    return info


def run_once(image: str, *args, env=None, options=()) -> subprocess.CompletedProcess:
    """`podman run --rm` to the end; the result, whatever the exit status."""
    return podman(
        "run", "--rm", "--network", "host", *LIMITS, *options, *env_options(env or {}), image,
        *args,
        check=False,
        timeout=300,
    )  # fmt: skip


def env_options(env: dict) -> list[str]:
    options = []
    for name, value in env.items():
        options += ["-e", f"{name}={value}"]
    return options


class Container:
    """A detached container of the image, removed by `remove()`."""

    def __init__(self, image, *args, env=None, options=()):
        self.name = f"receiver-test-{uuid.uuid4().hex[:10]}"
        self.started = time.monotonic()
        podman(
            "run", "-d", "--name", self.name, "--network", "host", *LIMITS, *options,
            *env_options(env or {}), image, *args,
            timeout=120,
        )  # fmt: skip

    def inspect(self) -> dict:
        (info,) = json.loads(podman("container", "inspect", self.name).stdout)
        return info

    def running(self) -> bool:
        return self.inspect()["State"]["Running"]

    def exit_code(self) -> int:
        return self.inspect()["State"]["ExitCode"]

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def exec(self, *argv, check=False) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *argv, check=check, timeout=60)

    def signal(self, name="TERM"):
        podman("kill", "--signal", name, self.name)

    def wait(self, timeout=60) -> int:
        """Wait for the container to exit; its exit status."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout} s")
            time.sleep(0.1)
        return self.exit_code()

    def remove(self):
        podman("rm", "-f", "-t", "0", self.name, check=False, timeout=60)
