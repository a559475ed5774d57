"""Installed is the same as checked out: a wheel in a new venv, run from an empty directory.

Nothing at run time may read files relative to the checkout or the working directory; this
builds the wheel from a copy of the source, installs it outside the checkout and uses it the
way a deployment does.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import requests

from receiver.storage.migrate import load_migrations

from support import ROOT
from support.devserve import DevServe

pytestmark = pytest.mark.slow

SOURCE_IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".receiver",
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A new venv outside the checkout with the wheel built from a copy of the source."""
    work = tmp_path_factory.mktemp("install")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=SOURCE_IGNORED)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(work / "dist"),
            str(source),
        ]
    )
    (wheel,) = (work / "dist").glob("receiver-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)])
    shutil.rmtree(source)  # nothing may still need it
    return venv


def run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def empty_dir(tmp_path):
    directory = tmp_path / "empty"
    directory.mkdir()
    return directory


def test_the_wheel_ships_no_top_level_migrations_package(installed):
    site = run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import receiver, sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]
    )
    purelib = Path(site.stdout.strip())
    assert not (purelib / "migrations").exists()
    assert not (purelib / "deploy").exists()
    packaged = sorted(p.name for p in (purelib / "receiver" / "migrations").glob("*.sql"))
    assert packaged == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))


def test_receiver_serve_from_an_empty_directory_answers_as_the_banner_says(
    installed, empty_dir, tmp_path
):
    server = DevServe(str(installed / "bin" / "receiver"), empty_dir, tmp_path / "state")
    try:
        assert requests.get(server.base + "/readyz", timeout=5).json() == {"status": "ready"}
        anonymous = requests.post(server.base + "/webhook", data=b"[]", timeout=5)
        assert anonymous.status_code == 401
        # The banner's own curl line, run as printed from the empty directory: the sample it
        # posts ships with the installed package, not with a checkout.
        argv = server.curl_argv()
        sample = Path(next(a for a in argv if a.startswith("@"))[1:])
        assert sample.is_file() and installed in sample.parents
        curl = subprocess.run(
            [*argv, "-s", "-w", "\n%{http_code}"],
            cwd=empty_dir,
            capture_output=True,
            text=True,
            timeout=30,
        )
        answer, status = curl.stdout.rsplit("\n", 1)
        assert status == "200", curl.stdout + curl.stderr
        assert '"stored":1' in answer and '"duplicates":1' in answer
        # The other commands find the development database while serve runs, from anywhere.
        listing = subprocess.run(
            [str(installed / "bin" / "receiver"), "quarantine", "list"],
            cwd=empty_dir,
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listing.returncode == 0, listing.stderr
        assert "0 unresolved row(s)" in listing.stdout
    finally:
        server.stop()
    assert list(empty_dir.iterdir()) == []  # nothing written into the working directory


def test_receiver_migrate_applies_every_migration_even_beside_another_migrations_package(
    installed, empty_dir, empty_database
):
    # Another distribution shipping a top-level `migrations` package must not shadow ours.
    purelib = run(
        [
            str(installed / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]
    ).stdout.strip()
    impostor = Path(purelib) / "migrations"
    impostor.mkdir()
    (impostor / "__init__.py").write_text("")
    (impostor / "001_other.sql").write_text("SELECT 1;\n")
    try:
        env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": empty_database}
        result = run([str(installed / "bin" / "receiver"), "migrate"], cwd=empty_dir, env=env)
    finally:
        shutil.rmtree(impostor)
    expected = [(m.version, m.name) for m in load_migrations()]
    assert f"{len(expected)} migration(s) applied" in result.stdout
    with psycopg.connect(empty_database) as conn:
        applied = conn.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
    assert applied == expected
