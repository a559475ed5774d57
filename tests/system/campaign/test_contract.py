"""The Campaign client against Prism, a mock generated from the vendor's OpenAPI document.

`prism mock --errors` validates every request against the document (a violation is logged
and answered with an error) and answers with the documented shapes; the `Prefer: code=N`
header makes it answer any documented status, so each documented error goes through the real
client. Prism is the npm package pinned in tests/contract/package-lock.json; the first run
installs it with `npm ci` into a per-user cache folder named after the lock file's hash (never
into the checkout), and without node, npm or the npm registry these tests skip, saying why.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from receiver.campaign.client import CampaignClient, CampaignError
from receiver.campaign.registration import TYPES
from receiver.cli import main

from support import ROOT, free_port, wait_until

CONTRACT = ROOT / "tests" / "contract"
SPEC = CONTRACT / "campaign-rest-webhooks.openapi.json"
LOCK = CONTRACT / "package-lock.json"
PRISM_BIN = Path("node_modules", ".bin", "prism")
# Offline, npm's default retries take over a minute to fail; a short back-off fails in seconds.
NPM_CI = [
    *("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline"),
    *("--fetch-retries=2", "--fetch-retry-mintimeout=1000", "--fetch-retry-maxtimeout=5000"),
]
NPM_TIMEOUT = 300  # a registry that drops packets rather than refusing them
CLIENT_ID = 123456
AUTH = ("api-user", "api-pass")
URL = "https://receiver.example.com/webhook"
AUTHENTICATION = '{"type":"basicAuth","userName":"campaign","password":"p"}'
# Every error status the document lists, per operation, and a word its message must carry.
DOCUMENTED_ERRORS = [
    ("create", 400, "URL, the type or the format"),
    ("update", 400, "refused to update"),
    ("update", 404, "does not exist"),
    ("update", 409, "another client"),
    ("activate", 400, "already activated"),
    ("activate", 404, "does not exist"),
    ("activate", 409, "another client"),
    ("deactivate", 400, "not activated"),
    ("deactivate", 404, "does not exist"),
    ("deactivate", 409, "another client"),
    ("delete", 400, "deactivate it before deleting"),
    ("delete", 404, "does not exist"),
    ("delete", 409, "another client"),
    ("verify", 400, "does not support verifying"),
]
OPERATIONS = {
    "create": lambda c: c.create_webhook("open", URL, AUTHENTICATION),
    "update": lambda c: c.update_webhook(7, "archive", URL, AUTHENTICATION),
    "activate": lambda c: c.activate(7),
    "deactivate": lambda c: c.deactivate(7),
    "delete": lambda c: c.delete(7),
    "verify": lambda c: c.verify(7, mailing_id=99, number_of_events=3),
}


def test_the_copied_document_is_the_vendors_unchanged():
    shared = ROOT.parent / "shared" / "reference" / SPEC.name
    if not shared.exists():
        pytest.skip(f"{shared} is not beside the checkout")
    assert json.loads(SPEC.read_text()) == json.loads(shared.read_text())


def prism_home() -> Path:
    """The per-user folder Prism is installed in, one per version of the lock file."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "receiver" / f"prism-{hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]}"


def install_prism(home: Path) -> str | None:
    """`npm ci` of tests/contract/ into `home`; None when done, else why it could not be."""
    if not (shutil.which("npm") and shutil.which("node")):
        return "node and npm are not installed: Prism (tests/contract/) cannot run"
    try:
        home.parent.mkdir(parents=True, exist_ok=True)
        # Installed beside `home` and renamed into place: an interrupted or failed install is
        # never taken for a complete one, and two runs installing at once do not mix.
        staging = Path(tempfile.mkdtemp(prefix=home.name + ".partial-", dir=home.parent))
    except OSError as error:
        return f"cannot create {home.parent} for Prism: {error}"
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copy(CONTRACT / name, staging / name)
        done = subprocess.run([*NPM_CI, "--prefix", str(staging)], capture_output=True,
                              text=True, timeout=NPM_TIMEOUT, check=False)  # fmt: skip
        if done.returncode != 0:
            return f"npm ci could not install Prism: {npm_gist(done.stderr)}"
        try:
            staging.rename(home)
        except OSError:  # another run installed it first: theirs is as good
            if not (home / PRISM_BIN).exists():
                raise
    except subprocess.TimeoutExpired:
        return f"npm ci could not install Prism in {NPM_TIMEOUT} s (is the npm registry reachable?)"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return None


def npm_gist(stderr: str) -> str:
    """npm's error code and first message line, without the stack, the help and the log path."""
    lines = [re.sub(r"^npm (error|ERR!) ?", "", line).strip() for line in stderr.splitlines()]
    code = next((line.split()[1] for line in lines if re.match(r"code \S+$", line)), None)
    noise = re.compile(r"^(code|errno|syscall) \S+$|^at |^A complete log")
    message = next((line for line in lines if line and not noise.search(line)), "no message")
    return f"{code}: {message}" if code else message


class Prism:
    """`prism mock --errors` on a free loopback port; its log kept to look for violations."""

    def __init__(self, executable, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.offset = 0  # violations are counted from here (see `reset`)
        self._log = open(log_path, "w")  # noqa: SIM115 (closed in stop)
        command = [
            str(executable),
            "mock",
            str(SPEC),
            "--errors",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
        ]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=60, interval=0.2)

    def _ready(self):
        if self.process.poll() is not None:
            raise AssertionError(f"prism exited: {self.log_path.read_text()}")
        try:
            requests.get(f"{self.url}/{CLIENT_ID}/webhooks", auth=AUTH, timeout=1)
        except requests.RequestException:
            return False
        return True

    def reset(self):
        """Count violations from now on only."""
        self.offset = len(self.log_path.read_text())

    def violations(self) -> list[str]:
        """Prism's validation errors since `reset` (requests that do not match the document)."""
        log = self.log_path.read_text()[self.offset :]
        return [line for line in log.splitlines() if "✖" in line]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=20)
        self._log.close()


@pytest.fixture(scope="module")
def prism_server(tmp_path_factory):
    home = prism_home()
    if not (home / PRISM_BIN).exists():
        why_not = install_prism(home)
        if why_not:
            pytest.skip(why_not)
    mock = Prism(home / PRISM_BIN, tmp_path_factory.mktemp("prism") / "prism.log")
    yield mock
    mock.stop()


@pytest.fixture
def prism(prism_server):
    """The module's Prism, its violations counted from this test's start."""
    prism_server.reset()
    return prism_server


def client(prism, code=None):
    headers = {"Prefer": f"code={code}"} if code else {}
    return CampaignClient(CLIENT_ID, AUTH, base_url=prism.url, headers=headers)


def test_every_operation_sends_what_the_document_describes(prism):
    api = client(prism)
    assert isinstance(api.list_webhooks(), list)
    for name in TYPES:
        assert "id" in api.create_webhook(name, URL, AUTHENTICATION)
    for operation in ("update", "activate", "deactivate", "delete"):
        OPERATIONS[operation](api)
    answers = api.verify(7, mailing_id=99, number_of_events=100)
    assert {"httpStatusCode", "numberOfEvents"} <= set(answers[0])
    assert prism.violations() == []


def test_a_request_outside_the_document_is_caught(prism):
    """The check above can fail: a wrong type is a violation Prism reports."""
    with pytest.raises(CampaignError):
        client(prism).create_webhook("nonsense", URL, AUTHENTICATION)
    assert any("type must be equal to one of the allowed values" in v for v in prism.violations())


@pytest.mark.parametrize(("operation", "status", "words"), DOCUMENTED_ERRORS)
def test_every_documented_error_status_has_its_message(prism, operation, status, words):
    with pytest.raises(CampaignError) as raised:
        OPERATIONS[operation](client(prism, status))
    assert raised.value.status == status
    assert words in str(raised.value)
    assert prism.violations() == []


def test_the_commands_send_only_valid_requests(prism, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("CAMPAIGN_API_URL", prism.url)
    monkeypatch.setenv("CAMPAIGN_CLIENT_ID", str(CLIENT_ID))
    monkeypatch.setenv("CAMPAIGN_API_USER", AUTH[0])
    monkeypatch.setenv("CAMPAIGN_API_PASSWORD", AUTH[1])
    monkeypatch.setenv("RECEIVER_BASIC_AUTH", "campaign:s3cret")
    monkeypatch.setenv("RECEIVER_STATE_DIR", str(tmp_path))  # no development database there
    for name in (
        "DATABASE_URL",
        "RECEIVER_KEY_AUTH",
        "RECEIVER_BASIC_AUTH_FILE",
        "RECEIVER_KEY_AUTH_FILE",
        "CAMPAIGN_API_CREDENTIALS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    commands = [
        ["setup", "--url", URL, "--mailing-id", "99", "--events", "5"],
        ["status", "--url", URL],
        ["teardown", "--url", URL],
        ["webhooks", "list", "--json"],
        ["webhooks", "create", "--type", "archived", "--url", URL],
        ["webhooks", "update", "7", "--type", "click", "--url", URL],
        ["webhooks", "verify", "7", "--mailing-id", "99"],
        ["webhooks", "activate", "7"],
        ["webhooks", "deactivate", "7"],
        ["webhooks", "delete", "7"],
    ]
    for argv in commands:
        main(["campaign", *argv])
    output = capsys.readouterr()
    assert "authentication:" in output.out  # setup ran through
    assert "receiver: campaign:" not in output.err  # no call failed
    assert prism.violations() == []


def test_without_the_npm_registry_the_contract_tests_skip_saying_why(tmp_path):
    """Offline for real: npm pointed at a closed port, with an empty cache and no Prism yet."""
    if not (shutil.which("npm") and shutil.which("node")):
        pytest.skip("node and npm are not installed: nothing to install Prism with")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "npm_config_registry": "http://127.0.0.1:9/",
           "npm_config_cache": str(tmp_path / "npm-cache")}  # fmt: skip
    command = [sys.executable, "-m", "pytest", __file__, "-p", "no:cacheprovider", "-rs",
               "-k", "sends_what_the_document_describes"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout, done.stdout
    assert "npm ci could not install Prism: ECONNREFUSED: FetchError" in done.stdout, done.stdout
    assert list((tmp_path / "cache" / "receiver").iterdir()) == []  # no half install left
