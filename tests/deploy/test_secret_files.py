"""Secrets as the manifests hand them over (``RELAYDESK_*_FILE`` pointing at a mounted file): a
file written on Windows or by ``echo`` is the secret without its line ending or byte order mark;
an empty file or the Secret template's ``REPLACE_ME`` stops every service at start, naming the
variable and the path, instead of running on an empty or publicly known secret."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.config import ConfigError, load
from tests.deploy.deploy_files import DEPLOY, k8s_docs, workloads


@pytest.mark.parametrize("written", [b"tok-123\n", b"tok-123\r\n", b"tok-123\n\n", b"\xef\xbb\xbftok-123\r\n"])
def test_a_secret_file_is_its_content_without_line_endings_or_a_byte_order_mark(tmp_path: Path, written: bytes) -> None:
    path = tmp_path / "api-token"
    path.write_bytes(written)
    assert load(None, env={"RELAYDESK_API_TOKEN_FILE": str(path)}).api.token == "tok-123"


@pytest.mark.parametrize("written", [b"", b"\n", b"\r\n", b"  \n"])
def test_an_empty_secret_file_is_refused_naming_the_variable_and_the_path(tmp_path: Path, written: bytes) -> None:
    path = tmp_path / "twilio-auth-token"
    path.write_bytes(written)
    with pytest.raises(ConfigError) as err:
        load(None, env={"RELAYDESK_TWILIO_AUTH_TOKEN_FILE": str(path)})
    assert err.value.problems == [
        f"RELAYDESK_TWILIO_AUTH_TOKEN_FILE: {path} is empty: write the secret into it,"
        " or unset RELAYDESK_TWILIO_AUTH_TOKEN_FILE"
    ]


def test_the_secret_template_applied_unfilled_stops_every_pod_naming_each_secret(tmp_path: Path) -> None:
    """Each pod with the keys it mounts as the template has them (the DSN too: its password is
    the placeholder): every ``_FILE`` variable is a problem, none is taken as the secret."""
    template = yaml.safe_load((DEPLOY / "k8s" / "secret.template.yaml").read_text())["stringData"]
    (configmap,) = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    for component, pod in workloads().items():
        (container,) = pod["spec"]["containers"]
        (volume,) = [v for v in pod["spec"]["volumes"] if "secret" in v]
        mounted = {item["path"]: item["key"] for item in volume["secret"]["items"]}
        env = dict(configmap["data"])
        for var in container["env"]:
            value = var.get("value", "pod-name")
            if var["name"].endswith("_FILE"):
                file = tmp_path / component / Path(value).name
                file.parent.mkdir(exist_ok=True)
                file.write_text(template[mounted[Path(value).name]] + "\n")
                value = str(file)
            env[var["name"]] = value
        files = sorted(name for name in env if name.endswith("_FILE"))
        assert files, component
        with pytest.raises(ConfigError) as err:
            load(None, env=env)
        assert sorted(p.split(":")[0] for p in err.value.problems) == files, component
        assert all("still holds the placeholder REPLACE_ME" in p for p in err.value.problems), err.value.problems
