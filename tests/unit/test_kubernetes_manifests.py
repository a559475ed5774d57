"""deploy/kubernetes/ and deploy/container/: the manifests parse, and agree with the image.

The image itself is built and run in tests/system/test_container.py; here, without any cluster,
the manifests are held to the Containerfile (port, user, probes, writable /tmp), to the app (its
probe routes) and to the settings the receiver knows (receiver/config.py SETTINGS).
"""

import ast
import json
import re
import shlex

import pytest
import yaml
from flask import Flask

from receiver.config import SETTINGS
from receiver.web import health

from support import ROOT

KUBERNETES = ROOT / "deploy" / "kubernetes"
CONTAINERFILE = ROOT / "deploy" / "container" / "Containerfile"
ENTRYPOINT = ROOT / "deploy" / "container" / "entrypoint.sh"
GUNICORN_CONF = ROOT / "receiver" / "web" / "gunicorn_conf.py"
# Read by gunicorn_conf (and by prometheus_client), not by receiver.config.
GUNICORN_VARIABLES = {"PORT", "WEB_CONCURRENCY", "RECEIVER_THREADS", "PROMETHEUS_MULTIPROC_DIR"}


def documents():
    """{(kind, name): object} of every manifest in deploy/kubernetes/."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is None:
                continue
            assert {"apiVersion", "kind", "metadata"} <= document.keys(), path.name
            key = (document["kind"], document["metadata"]["name"])
            assert key not in found, f"{key} twice"
            found[key] = document
    return found


MANIFESTS = documents()
DEPLOYMENT = MANIFESTS["Deployment", "receiver"]
JOB = MANIFESTS["Job", "receiver-migrate"]
SERVICE = MANIFESTS["Service", "receiver"]
SECRET = MANIFESTS["Secret", "receiver"]
CRONJOB = MANIFESTS["CronJob", "receiver-maintain"]
POD = DEPLOYMENT["spec"]["template"]
(CONTAINER,) = POD["spec"]["containers"]
(MIGRATE,) = JOB["spec"]["template"]["spec"]["containers"]
MAINTAIN_POD = CRONJOB["spec"]["jobTemplate"]["spec"]["template"]["spec"]
(MAINTAIN,) = MAINTAIN_POD["containers"]
# Every pod the manifests run, each with its container: the server, the migrations, maintain.
EVERY_POD = pytest.mark.parametrize(
    "container, pod",
    [
        (CONTAINER, POD["spec"]),
        (MIGRATE, JOB["spec"]["template"]["spec"]),
        (MAINTAIN, MAINTAIN_POD),
    ],
    ids=["deployment", "job", "cronjob"],
)


def containerfile():
    """The instructions of the Containerfile's final stage, as (KEYWORD, arguments)."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            instructions = []  # a new stage: only the last one is the image
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


IMAGE = containerfile()


def instruction(keyword):
    (value,) = [rest for key, rest in IMAGE if key == keyword]
    return value


def image_env():
    env = {}
    for rest in (rest for key, rest in IMAGE if key == "ENV"):
        for item in shlex.split(rest):
            name, _, value = item.partition("=")
            env[name] = value
    return env


def port_number(container, port):
    """A probe's or a Service's port (a name or a number) as the container's port number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def env_of(container):
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def test_the_manifests_are_the_expected_objects():
    assert set(MANIFESTS) == {
        ("Deployment", "receiver"),
        ("Service", "receiver"),
        ("Job", "receiver-migrate"),
        ("Secret", "receiver"),
        ("CronJob", "receiver-maintain"),
    }
    assert DEPLOYMENT["apiVersion"] == "apps/v1"
    assert JOB["apiVersion"] == CRONJOB["apiVersion"] == "batch/v1"


def test_the_containerfile_is_multi_stage_on_a_base_given_as_argument():
    text = CONTAINERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S*python:3\.11-slim", text, re.M)
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2 and stages[-1] == "${BASE_IMAGE}"
    # The final stage takes the built virtualenv, nothing that built it.
    assert ("COPY", "--from=build /opt/receiver /opt/receiver") in IMAGE
    assert not any(key == "RUN" and re.search(r"pip|apt|gcc", rest) for key, rest in IMAGE)


def test_the_image_runs_the_procfiles_web_command_as_a_numeric_non_root_user():
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert json.loads(instruction("CMD")) == shlex.split(procfile["web"])
    user, _, group = instruction("USER").partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit()
    assert instruction("STOPSIGNAL") == "SIGTERM"


def test_same_port_everywhere():
    (exposed,) = instruction("EXPOSE").split()
    port = int(exposed)
    assert image_env()["PORT"] == str(port)
    assert env_of(CONTAINER)["PORT"] == str(port)
    assert [p["containerPort"] for p in CONTAINER["ports"]] == [port]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert port_number(CONTAINER, CONTAINER[probe]["httpGet"]["port"]) == port
    (service_port,) = SERVICE["spec"]["ports"]
    assert port_number(CONTAINER, service_port["targetPort"]) == port
    assert POD["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_probes_are_the_apps_own_routes_and_the_healthcheck_the_liveness_one():
    app = Flask("probes")
    app.register_blueprint(health.bp)
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert CONTAINER["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    assert CONTAINER["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
    assert CONTAINER["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert "/healthz" in instruction("HEALTHCHECK")


def test_the_service_selects_the_deployments_pods():
    pod_labels = POD["metadata"]["labels"].items()
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"].items() <= pod_labels
    assert SERVICE["spec"]["selector"].items() <= pod_labels
    job_labels = JOB["spec"]["template"]["metadata"]["labels"].items()
    assert not SERVICE["spec"]["selector"].items() <= job_labels, "no traffic to the Job's pod"


def entrypoint_file_variables():
    """The variables whose _FILE form the image's entrypoint reads (the `for name in` line)."""
    (names,) = re.findall(r"^for name in ([A-Z_ ]+); do$", ENTRYPOINT.read_text(), re.M)
    return set(names.split())


def test_every_variable_is_one_the_receiver_or_the_image_knows():
    source = GUNICORN_CONF.read_text()
    for name in GUNICORN_VARIABLES - {"PROMETHEUS_MULTIPROC_DIR"}:
        assert f'"{name}"' in source, name
    by_entrypoint = entrypoint_file_variables()
    assert by_entrypoint <= SETTINGS.keys()
    known = SETTINGS.keys() | GUNICORN_VARIABLES | {f"{name}_FILE" for name in by_entrypoint}
    for container in (CONTAINER, MIGRATE, MAINTAIN):
        assert env_of(container).keys() <= known, env_of(container).keys() - known
    assert image_env().keys() - {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"} <= known


@EVERY_POD
def test_secrets_are_files_of_the_mounted_secret(container, pod):
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    files = {name: value for name, value in env_of(container).items() if name.endswith("_FILE")}
    assert "DATABASE_URL_FILE" in files
    assert "DATABASE_URL" not in env_of(container)  # a password never in the manifest
    for value in files.values():
        directory, _, key = value.rpartition("/")
        (mount,) = [m for m in mounts.values() if m["mountPath"] == directory]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["secret"]["secretName"] == SECRET["metadata"]["name"]
        assert key in SECRET["stringData"]


@EVERY_POD
def test_non_root_read_only_root_and_tmp_in_memory(container, pod):
    uid, _, gid = instruction("USER").partition(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsGroup"] == int(gid)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # The metrics directory the image names is on the emptyDir mounted at /tmp.
    metrics = image_env()["PROMETHEUS_MULTIPROC_DIR"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert metrics.startswith("/tmp/")
    assert volumes[tmp["name"]]["emptyDir"]["medium"] == "Memory"
    assert container["image"] == CONTAINER["image"]


def test_the_migrate_job_runs_receiver_migrate_once():
    assert MIGRATE["args"] == ["receiver", "migrate"]
    assert "command" not in MIGRATE  # through the image's entrypoint (the _FILE forms)
    assert JOB["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert "command" not in CONTAINER and "args" not in CONTAINER


def test_the_maintain_cronjob_runs_one_pass_an_hour_never_two_at_once():
    """The workers' upkeep only makes the coming months: stray events, roll-ups and retention
    need `receiver maintain`, as systemd's timer and the Procfile's maintain: run it."""
    assert MAINTAIN["args"] == ["receiver", "maintain"]
    assert "command" not in MAINTAIN
    assert CRONJOB["spec"]["concurrencyPolicy"] == "Forbid"
    minute, hour, *_ = CRONJOB["spec"]["schedule"].split()
    assert minute.isdigit() and hour == "*"
    assert MAINTAIN_POD["restartPolicy"] == "Never"


def graceful_timeout():
    tree = ast.parse(GUNICORN_CONF.read_text())
    (value,) = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["graceful_timeout"]
    ]
    return value


def test_the_kubelet_waits_for_the_graceful_stop():
    """SIGKILL only after preStop and gunicorn's graceful_timeout: batches in flight commit."""
    pre_stop = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = POD["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(pre_stop[1]) + graceful_timeout()
    assert DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
