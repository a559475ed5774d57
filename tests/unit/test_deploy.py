"""The deploy/ folder's files checked against the package, without running anything: the Grafana
dashboard and the alerts use only exported metrics, the nginx site, the systemd unit and its
environment file match the receiver's settings, the docs list every metric and setting.

The same files run for real (promtool, Prometheus, nginx, systemd-analyze, gunicorn with TLS):
tests/system/test_deploy.py.
"""

import ipaddress
import json
import re
from pathlib import Path

from receiver import config as receiver_config

from support import ROOT
from support.deploy import (
    ALERT_TESTS,
    ALERTS,
    CONFIGURATION_PAGE,
    DASHBOARD,
    ENV_EXAMPLE,
    GUNICORN_CONF,
    MONITORING_PAGE,
    NGINX_SITE,
    PROMETHEUS_CONFIG,
    alert_rules,
    env_file,
    exported_series,
    gunicorn_setting,
    load_yaml,
    local_command,
    unit_environment,
    unit_settings,
    unit_value,
)

SECRETS = {"DATABASE_URL", "RECEIVER_BASIC_AUTH", "RECEIVER_KEY_AUTH"}
# The two settings the example sets away from their defaults, to go with the nginx site.
BEHIND_NGINX = {
    "RECEIVER_TRUSTED_PROXIES": "1",
    "RECEIVER_ALLOWED_IPS": "193.169.180.1",
    # /metrics for this host and the private networks, as the nginx site allows.
    "RECEIVER_METRICS_ALLOWED_IPS": (
        f"{receiver_config.DEFAULT_METRICS_ALLOWED_IPS} {receiver_config.PRIVATE_NETWORKS}"
    ),
}


# --- Metric names in PromQL -------------------------------------------------------------------

# Words of PromQL that look like metric names: operators, modifiers and aggregations that may
# be written without a parenthesis right after them (`sum by (x) (...)`).
PROMQL_WORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}


def metric_names(expr):
    """The metric names a PromQL expression selects (Grafana variables allowed)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($instance, $__rate_interval)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, is_call = match.groups()
        if not is_call and word.lower() not in PROMQL_WORDS:
            names.add(word)
    return names


def test_metric_names_finds_every_selector_and_nothing_else():
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(receiver_x_bucket{a="b c"}[5m]))) > 1e3'
        " unless on (job) sum without (le) (rate(receiver_y_total[$__rate_interval] offset 5m))"
        ' / ignoring (x) group_left (y) up{job="receiver"} or vector(0) + typo_metric'
    )
    assert metric_names(expr) == {"receiver_x_bucket", "receiver_y_total", "up", "typo_metric"}


def unknown_names(expr, allowed):
    names = metric_names(expr)
    assert names, f"no metric found in {expr!r}"
    return names - allowed


# --- Grafana ----------------------------------------------------------------------------------


def dashboard_panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def test_dashboard_is_valid_and_uses_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}

    series = exported_series()
    allowed = set(series)
    used = set()
    ids = []
    for panel in dashboard_panels(dashboard):
        ids.append(panel["id"])
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            assert not unknown_names(target["expr"], allowed), (panel["title"], target["expr"])
            used |= metric_names(target["expr"])
    assert len(ids) == len(set(ids)), "panel ids must be unique"

    # Variable queries name metrics too: label_values(metric, label).
    for variable in variables.values():
        if variable["type"] == "query":
            query = (
                variable["query"]["query"]
                if isinstance(variable["query"], dict)
                else (variable["query"])
            )
            metric = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query).group(1)
            assert metric in allowed, query

    # Every metric the receiver exports has a panel: a metric added without one fails here.
    missing = set(series.values()) - {series[name] for name in used}
    assert not missing, f"no dashboard panel shows {sorted(missing)}"


# --- Prometheus: rules and config -----------------------------------------------------------


def test_alerts_use_only_exported_metrics_and_are_documented():
    allowed = set(exported_series()) | {"up"}
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert not unknown_names(rule["expr"], allowed), (rule["alert"], rule["expr"])
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        for annotation in ("summary", "description", "runbook"):
            assert rule["annotations"][annotation].strip(), (rule["alert"], annotation)


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    cases = [
        case for test in load_yaml(ALERT_TESTS)["tests"] for case in test.get("alert_rule_test", [])
    ]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']} never fires in a test"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no quiet case"


def test_alerts_select_the_job_the_scrape_config_defines():
    jobs = {job["job_name"] for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    for rule in alert_rules():
        for job in re.findall(r'job="([^"]*)"', rule["expr"]):
            assert job in jobs, rule["alert"]
    assert load_yaml(PROMETHEUS_CONFIG)["rule_files"] == [ALERTS.name]


# --- nginx --------------------------------------------------------------------------------------


def nginx_directives(name):
    """The values of every `name ...;` directive in the nginx site (comments ignored)."""
    text = re.sub(r"#[^\n]*", "", NGINX_SITE.read_text())
    return [value.strip() for value in re.findall(rf"(?:^|[{{;\s]){name}\s+([^;{{}}]*);", text)]


def nginx_seconds(value):
    match = re.fullmatch(r"(\d+)(ms|s|m)?", value)
    number, unit = int(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60}[unit]


def test_nginx_site_matches_the_receiver():
    # client_max_body_size is RECEIVER_MAX_BODY_BYTES' default (nginx: k = 1024, m = 1024 * 1024).
    (size,) = nginx_directives("client_max_body_size")
    number, unit = re.fullmatch(r"(\d+)([kKmM]?)", size).groups()
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[unit.lower()]
    assert int(number) * factor == int(receiver_config.SETTINGS["RECEIVER_MAX_BODY_BYTES"][1])
    # Every proxy timeout answers before the sender's ~10 s (the server's, for the webhook);
    # the feed's long-polls alone may take longer, and nginx waits for their answer.
    for name in ("proxy_connect_timeout", "proxy_send_timeout", "proxy_read_timeout"):
        value, *feed_only = nginx_directives(name)
        assert nginx_seconds(value) < 10, name
    from receiver.web import feed

    longest_poll = feed.MAX_WAIT_SECONDS + feed.ANSWER_WITHIN_SECONDS
    assert [nginx_seconds(v) > longest_poll for v in feed_only] == [True]
    # The one hop RECEIVER_TRUSTED_PROXIES=1 counts, and the upstream is gunicorn's default bind.
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in nginx_directives("proxy_set_header")
    assert nginx_directives("server") == ["127.0.0.1:8000"]
    assert '"127.0.0.1:8000"' in GUNICORN_CONF.read_text()
    assert nginx_directives("ssl_protocols") == ["TLSv1.2 TLSv1.3"]


def nginx_location(path):
    """The directives of the site's `location = path { ... }` block (comments dropped)."""
    text = re.sub(r"#[^\n]*", "", NGINX_SITE.read_text())
    (body,) = re.findall(rf"location\s+=\s+{re.escape(path)}\s*\{{([^{{}}]*)\}}", text)
    return [" ".join(d.split()) for d in body.split(";") if d.strip()]


def nginx_access(path):
    """The `allow`/`deny` rules of a location, in order."""
    return [d for d in nginx_location(path) if d.split()[0] in ("allow", "deny")]


def test_nginx_site_opens_only_healthz_and_the_webhook_to_everyone():
    metrics = nginx_access("/metrics")
    # /readyz asks the database on every call: the same list as /metrics, not the world.
    assert nginx_access("/readyz") == metrics
    assert metrics[-1] == "deny all"
    allowed = [ipaddress.ip_network(rule.split()[1]) for rule in metrics[:-1]]
    assert allowed and all(rule.startswith("allow ") for rule in metrics[:-1])
    for network in allowed:
        assert network.is_private, network  # this host and private networks only
    # The receiver's own /metrics list in the settings that go with the site (the systemd
    # example) admits at least what nginx admits, so a scrape nginx lets through is not refused
    # behind it; its default (no setting) is this host only.
    configured = receiver_config.parse_networks(
        env_file(ENV_EXAMPLE)["RECEIVER_METRICS_ALLOWED_IPS"]
    )
    for network in allowed:
        assert any(network.subnet_of(c) for c in configured if c.version == network.version)
    default = receiver_config.parse_networks(
        receiver_config.SETTINGS["RECEIVER_METRICS_ALLOWED_IPS"][1]
    )
    assert all(network.is_loopback for network in default)
    for path in ("/webhook", "/healthz"):
        assert nginx_access(path) == [], path
        assert "proxy_pass http://receiver" in nginx_location(path)
    assert "proxy_pass http://receiver" in nginx_location("/readyz")


def test_nginx_connects_from_the_default_trusted_proxy_address():
    """gunicorn sees nginx's connections come from 127.0.0.1 (the upstream is on loopback), which
    RECEIVER_TRUSTED_PROXY_IPS trusts by default: X-Forwarded-For is believed from there only."""
    (upstream,) = nginx_directives("server")
    host = ipaddress.ip_address(upstream.rsplit(":", 1)[0])
    assert host.is_loopback
    default = receiver_config.parse_networks(
        receiver_config.SETTINGS["RECEIVER_TRUSTED_PROXY_IPS"][1]
    )
    assert any(host in network for network in default)
    assert not any(network.num_addresses > 1 for network in default)  # single addresses


# --- systemd ------------------------------------------------------------------------------------


def test_systemd_unit_stops_gracefully_restarts_and_is_hardened():
    settings = unit_settings()
    assert unit_value(settings, "KillSignal") == "SIGTERM"  # gunicorn's graceful stop
    stop_timeout = int(unit_value(settings, "TimeoutStopSec"))
    assert stop_timeout > gunicorn_setting("graceful_timeout")
    assert unit_value(settings, "Restart") == "on-failure"
    assert unit_value(settings, "NoNewPrivileges") == "yes"
    assert unit_value(settings, "ProtectSystem") == "strict"
    assert unit_value(settings, "PrivateTmp") == "yes"
    # The multiprocess metrics directory is the unit's runtime directory.
    runtime = unit_value(settings, "RuntimeDirectory")
    assert unit_environment(settings)["PROMETHEUS_MULTIPROC_DIR"] == f"/run/{runtime}"
    program, *args = local_command(unit_value(settings, "ExecStartPre"))
    assert (Path(program).name, args) == ("receiver", ["migrate"])
    # Credentials as a systemd credential, read from the service's credentials directory.
    credential, _, source = unit_value(settings, "LoadCredential").partition(":")
    assert (credential, source) == ("basic-auth", "/etc/receiver/basic-auth")
    assert unit_environment(settings)["RECEIVER_BASIC_AUTH_FILE"] == f"%d/{credential}"
    start = local_command(unit_value(settings, "ExecStart"))
    # gunicorn's settings by module name: found wherever the package is installed.
    assert start[start.index("-c") + 1] == "python:receiver.web.gunicorn_conf"
    assert start[-1] == "receiver:create_app()"


def test_env_example_documents_every_setting_with_valid_values():
    example = env_file(ENV_EXAMPLE)
    # A setting the unit sets itself (Environment=) stays out of the example: the file's value
    # would override the unit's, even blank.
    set_by_unit = set(unit_environment(unit_settings()))
    assert set(receiver_config.SETTINGS) - set_by_unit <= set(example)
    assert not set_by_unit & set(example)
    for name in SECRETS:
        assert example[name] == "", f"{name} is a secret: leave it blank in the example"
    for name, (_, default) in receiver_config.SETTINGS.items():
        if name not in SECRETS | set_by_unit:
            assert example[name] == BEHIND_NGINX.get(name, default), name
    # The values are what the receiver accepts (only the secrets need filling in).
    config = receiver_config.load_config({**example, "DATABASE_URL": "postgresql:///receiver"})
    assert config.trusted_proxies == 1
    assert [str(n) for n in config.allowed_networks] == ["193.169.180.1/32"]
    # nginx on this host is the only trusted proxy; /metrics for this host and private networks.
    assert [str(n) for n in config.trusted_proxy_networks] == ["127.0.0.1/32", "::1/128"]
    assert ipaddress.ip_network("10.0.0.0/8") in config.metrics_allowed_networks
    # Gunicorn's own variables, at receiver/web/gunicorn_conf.py's defaults.
    assert example["WEB_CONCURRENCY"] == "2" and example["RECEIVER_THREADS"] == "4"
    assert "PORT" not in example  # it would bind 0.0.0.0, beside nginx instead of behind it


# --- docs/ ------------------------------------------------------------------------------------


def test_monitoring_page_lists_every_metric():
    text = MONITORING_PAGE.read_text()
    assert "\n## Metrics\n" in text
    section = text[text.index("\n## Metrics\n") :]
    listed = set(re.findall(r"^\| `(receiver_\w+)`", section, flags=re.MULTILINE))
    families = {}
    for series, family in exported_series().items():
        families.setdefault(family, set()).add(series)
    for family, series in families.items():
        assert listed & (series | {family}), f"docs/monitoring.md's Metrics does not list {family}"
    assert listed <= set(exported_series()) | set(families), listed


def configuration_rows():
    """{variable: default cell} of docs/configuration.md's table of settings."""
    text = CONFIGURATION_PAGE.read_text()
    section = text[text.index("| variable | default | meaning |") :]
    section = section[: section.index("\n\n")]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for name in re.findall(r"`([A-Z_]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def test_configuration_table_has_every_setting_with_its_default():
    rows = configuration_rows()
    for name, (_, default) in receiver_config.SETTINGS.items():
        assert name in rows, f"docs/configuration.md's table lacks {name}"
        if default is not None:
            assert rows[name] == (f"`{default}`" if default else ""), name


def test_every_procfile_process_is_a_command_that_exists():
    from click.testing import CliRunner

    from receiver.cli import cli

    processes = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert set(processes) == {"release", "web", "maintain"}
    for command in (processes["release"], processes["maintain"]):
        program, *args = command.split()
        assert program == "receiver"
        # --help after the arguments: click parses them (a typo fails) and runs nothing.
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, result.output
    assert "-c python:receiver.web.gunicorn_conf" in processes["web"]
