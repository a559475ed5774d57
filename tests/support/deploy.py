"""The deploy/ folder's files and the metrics they refer to, for the unit checks of those files
(tests/unit/test_deploy.py) and the runs of them with real tools (tests/system/test_deploy.py)."""

import ast
import shlex
import sys
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from receiver.observability import metrics as receiver_metrics

from . import ROOT

DEPLOY = ROOT / "deploy"
# gunicorn's settings ship with the package; deploy/gunicorn.conf.py only imports them.
GUNICORN_CONF = ROOT / "receiver" / "web" / "gunicorn_conf.py"
NGINX_SITE = DEPLOY / "nginx" / "receiver.conf"
UNIT = DEPLOY / "systemd" / "receiver.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "receiver.env.example"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERT_TESTS = PROMETHEUS_DIR / "alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "receiver-dashboard.json"
# The pages that document the deploy files' settings and metrics (docs/, built by mkdocs.yml).
CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"
MONITORING_PAGE = ROOT / "docs" / "monitoring.md"

# Where the unit expects the checkout; the tests substitute this checkout and this virtualenv.
UNIT_HOME = "/opt/receiver"
VENV_BIN = Path(sys.executable).parent


# --- Metric names: computed from receiver/observability/metrics.py, never kept by hand ---------

# The series a family exposes under prometheus_client's multiprocess collector (what /metrics
# serves under gunicorn): no `_created` series there.
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count"),
}


def exported_series():
    """{series name: family name} for every metric declared in receiver.observability.metrics."""
    series = {}
    for value in vars(receiver_metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            assert family.type in SERIES_SUFFIXES, f"{family.name}: add suffixes for {family.type}"
            for suffix in SERIES_SUFFIXES[family.type]:
                series[family.name + suffix] = family.name
    assert series, "receiver.observability.metrics declares no metrics"
    return series


def load_yaml(path):
    return yaml.safe_load(path.read_text())


def alert_rules():
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


# --- systemd --------------------------------------------------------------------------------


def unit_settings(path=UNIT):
    """{(section, key): [values]} of a unit file (keys may repeat, e.g. Environment=)."""
    settings, section = {}, None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def unit_value(settings, key, section="Service"):
    (value,) = settings[(section, key)]
    return value


def unit_environment(settings):
    pairs = [item.partition("=") for item in settings.get(("Service", "Environment"), [])]
    return {name: value for name, _, value in pairs}


def gunicorn_setting(name):
    """A top-level constant of receiver/web/gunicorn_conf.py, read without running the file."""
    for node in ast.parse(GUNICORN_CONF.read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not set in {GUNICORN_CONF}")


def env_file(path):
    """NAME=value lines of a systemd EnvironmentFile (comments and blank lines skipped)."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path}: not NAME=value: {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values[name.strip()] = value
    return values


def local_command(line):
    """A unit's command line, with this checkout and this virtualenv for /opt/receiver."""
    line = line.replace(f"{UNIT_HOME}/.venv/bin", str(VENV_BIN)).replace(UNIT_HOME, str(ROOT))
    return shlex.split(line)
