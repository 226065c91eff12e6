"""The Dockerfile and the compose example name only things that exist.

No Docker engine runs here, so the files are parsed: every COPY source is in the
tree (and not excluded by .dockerignore), CMD's flags are accepted by
``parse_flags`` and put the database in the volume whatever ``FAKTORY_ENV`` is,
the health check runs an existing tool, and the compose services fit together.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import importlib.metadata
import importlib.util
import json
import shlex
import signal
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import minifaktory
from minifaktory import cli, tools
from minifaktory.client import DEFAULT_URL, parse_url
from minifaktory.config import (
    PASSWORD_REQUIRED,
    config_from_flags,
    parse_flags,
    split_binding,
)
from minifaktory.errors import ConfigError

ROOT = Path(__file__).parent.parent
DOCKER_EXAMPLE = ROOT / "examples" / "docker"
VOLUME = "/var/lib/minifaktory"
CONFIG_DIR = "/etc/minifaktory"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD/ENTRYPOINT; the shell form is refused."""
        assert self.args.startswith("["), f"{self.keyword} should use the exec form"
        argv: list[str] = json.loads(self.args)
        return argv


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, f"{path} ends inside a continuation"
    return instructions


def only(instructions: list[Instruction], keyword: str) -> list[Instruction]:
    return [i for i in instructions if i.keyword == keyword]


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """Sources of every COPY/ADD from the build context (not ``--from`` another stage)."""
    sources: list[str] = []
    for ins in only(instructions, "COPY") + only(instructions, "ADD"):
        words = shlex.split(ins.args)
        if any(w.startswith("--from=") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += paths[:-1]
    return sources


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in only(instructions, "ENV"):
        for word in shlex.split(ins.args):
            key, sep, value = word.partition("=")
            assert sep, f"ENV {ins.args!r}: use KEY=value"
            env[key] = value
    return env


def ignored(path: str, patterns: list[str]) -> bool:
    """A close reading of .dockerignore: a path is excluded if it or a parent matches."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for candidate in candidates:
            if fnmatch.fnmatch(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(Path(candidate).name, bare)
            ):
                return True
    return False


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(ROOT / "Dockerfile")


def cmd(dockerfile: list[Instruction]) -> list[str]:
    [instruction] = only(dockerfile, "CMD")
    return instruction.exec_form()


# --------------------------------------------------------------------------- Dockerfile


def test_base_images_are_slim_python_3_11(dockerfile: list[Instruction]) -> None:
    froms = only(dockerfile, "FROM")
    assert froms
    for ins in froms:
        assert ins.args.split()[0] == "python:3.11-slim", ins.args


def test_copied_paths_exist_and_reach_the_build(dockerfile: list[Instruction]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = copy_sources(dockerfile)
    assert {"pyproject.toml", "README.md", "src"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the source tree"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    # The package data (templates, static files, py.typed) must reach the build too.
    for path in (ROOT / "src" / "minifaktory").rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and "__pycache__" not in relative:
            assert not ignored(relative, patterns), f"{relative} is excluded by .dockerignore"
    assert ignored(".venv/bin/python", patterns)
    assert ignored("src/minifaktory/__pycache__/app.cpython-311.pyc", patterns)


def test_the_command_is_the_installed_console_script(dockerfile: list[Instruction]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    program = cmd(dockerfile)[0]
    assert project["scripts"][program] == "minifaktory.cli:main"
    [entry] = importlib.metadata.entry_points(group="console_scripts", name=program)
    assert entry.load() is cli.main


def test_cmd_flags_bind_every_interface_and_keep_data_in_the_volume(
    dockerfile: list[Instruction], tmp_path: Path
) -> None:
    flags = parse_flags(cmd(dockerfile)[1:])
    image_env = env_of(dockerfile)
    assert image_env["FAKTORY_ENV"] == "production"
    no_system_password = tmp_path / "none"
    for environment in ("production", "staging", "development"):
        environ = {**image_env, "FAKTORY_ENV": environment, "FAKTORY_PASSWORD": "pw"}
        environ["HOME"] = VOLUME  # the user's home: a development server must not use ~
        config = config_from_flags(flags, environ, system_password_file=no_system_password)
        assert config.resolved_db_path() == Path(VOLUME) / "minifaktory.db", environment
        assert config.config_dir == Path(CONFIG_DIR)
        assert split_binding(config.binding, 0) == ("0.0.0.0", 7419)
        assert split_binding(config.web_binding, 0) == ("0.0.0.0", 7420)
    # Production defaults: no password, no start.
    with pytest.raises(ConfigError, match=PASSWORD_REQUIRED):
        config_from_flags(flags, image_env, system_password_file=no_system_password)


def test_volume_ports_user_and_directories(dockerfile: list[Instruction]) -> None:
    [volume] = only(dockerfile, "VOLUME")
    assert json.loads(volume.args) == [VOLUME]
    exposed = {int(port) for ins in only(dockerfile, "EXPOSE") for port in ins.args.split()}
    assert exposed == {7419, 7420}
    users = only(dockerfile, "USER")
    assert users and users[-1].args not in ("root", "0")
    user = users[-1].args
    run = " ".join(ins.args for ins in only(dockerfile, "RUN"))
    assert "useradd" in run and f" {user}" in run
    assert VOLUME in run and f"{CONFIG_DIR}/conf.d" in run
    assert f"chown {user}:{user} {VOLUME}" in run
    keywords = [ins.keyword for ins in dockerfile]
    assert keywords.index("USER") < keywords.index("CMD")


def test_healthcheck_runs_the_health_tool_on_the_exposed_port(
    dockerfile: list[Instruction],
) -> None:
    [check] = only(dockerfile, "HEALTHCHECK")
    _, sep, command = check.args.partition("CMD ")
    assert sep, check.args
    argv = json.loads(command)
    assert argv[0] == cmd(dockerfile)[0]
    assert argv[1] in tools.TOOLS
    assert callable(tools.load(argv[1]))
    assert parse_url(DEFAULT_URL).port == 7419  # what the tool checks with no URL given


# --------------------------------------------------------------------------- compose


def load_yaml(path: Path) -> Any:
    """The document, via PyYAML when installed; else None (a light check follows)."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        return None
    return yaml.safe_load(path.read_text())


def test_compose_file() -> None:
    path = DOCKER_EXAMPLE / "compose.yml"
    document = load_yaml(path)
    if document is None:
        text = path.read_text()
        for needle in ("services:", "faktory:", "worker:", f":{VOLUME}", "/run/secrets/"):
            assert needle in text
        return
    services = document["services"]
    assert set(services) == {"faktory", "worker"}

    server = services["faktory"]
    assert (DOCKER_EXAMPLE / server["build"]["context"]).resolve() == ROOT.resolve()
    assert f"faktory-data:{VOLUME}" in server["volumes"]
    assert "faktory-data" in document["volumes"]
    secret = server["environment"]["FAKTORY_PASSWORD"]
    assert secret == "/run/secrets/faktory_password"
    assert "faktory_password" in server["secrets"]
    assert document["secrets"]["faktory_password"]["file"]
    ports = {int(mapping.rsplit(":", 1)[1]) for mapping in server["ports"]}
    assert ports == {7419, 7420}

    worker = services["worker"]
    context = DOCKER_EXAMPLE / worker["build"]["context"]
    worker_dockerfile = parse_dockerfile(context / worker["build"]["dockerfile"])
    for source in copy_sources(worker_dockerfile):
        assert (context / source).is_file(), source
    assert worker["environment"]["FAKTORY_PASSWORD"] == secret
    assert "faktory_password" in worker["secrets"]
    assert worker["depends_on"]["faktory"]["condition"] == "service_healthy"
    host, port = split_binding(worker["environment"]["FAKTORY_HOST"], 0)
    assert (host, port) == ("faktory", 7419)


def load_worker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_worker", DOCKER_EXAMPLE / "worker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worker_url_reads_the_secret_file(tmp_path: Path) -> None:
    worker = load_worker()
    secret = tmp_path / "faktory_password"
    secret.write_text("s3cret\n")
    environ = {"FAKTORY_PASSWORD": str(secret), "FAKTORY_HOST": "faktory:7419"}
    assert worker.faktory_url(environ) == "tcp://:s3cret@faktory:7419"
    assert worker.faktory_url({}) == "tcp://faktory:7419"


@pytest.mark.compat
def test_the_compose_worker_works_a_job(tmp_path: Path) -> None:
    module = load_worker()
    secret = tmp_path / "faktory_password"
    secret.write_text("s3cret\n")
    previous = signal.getsignal(signal.SIGTERM)  # the client's Worker installs its own
    with minifaktory.run(password="s3cret") as srv:
        url = module.faktory_url(
            {"FAKTORY_PASSWORD": str(secret), "FAKTORY_HOST": f"127.0.0.1:{srv.port}"}
        )
        assert module.push(url, 2, 3)
        worker = module.make_worker(url, concurrency=1, disconnect_wait=1)

        def run() -> None:
            with contextlib.suppress(SystemExit):  # run() ends with sys.exit
                worker.run()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while srv.info()["faktory"]["total_processed"] < 1:
                assert time.monotonic() < deadline, "the worker did not ack the job"
                time.sleep(0.05)
        finally:
            worker.disconnect(wait=1)
            thread.join(10)
            signal.signal(signal.SIGTERM, previous)
    assert not thread.is_alive()
