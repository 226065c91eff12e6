"""The ``minifaktory`` command line: exit codes, output and handing the config to the server."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from minifaktory.cli import FaktoryFormatter, logging_to, main, version_text
from minifaktory.config import Config
from minifaktory.errors import ConfigError, StoreError

LOG_LINE = re.compile(r"^[DIWEF] \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S")


class Recorder:
    """A stand-in for ``run_forever`` that remembers what it was given."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.configs: list[Config] = []
        self.error = error

    def __call__(self, config: Config) -> None:
        self.configs.append(config)
        if self.error is not None:
            raise self.error


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    """An environment whose HOME is private to the test."""
    return {"HOME": str(tmp_path)}


def test_version_prints_and_exits_zero(
    capsys: pytest.CaptureFixture[str], environ: dict[str, str]
) -> None:
    runner = Recorder()
    assert main(["-v"], environ=environ, runner=runner) == 0
    out = capsys.readouterr().out
    assert out.startswith("minifaktory ")
    assert "Faktory 1.10.0" in out
    assert out == version_text() + "\n"
    assert runner.configs == []


def test_version_wins_over_a_bad_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-v", "-e", "bogus"], environ={}, runner=Recorder()) == 0
    assert capsys.readouterr().out.startswith("minifaktory ")


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    runner = Recorder()
    assert main([flag], environ={}, runner=runner) == 0
    out = capsys.readouterr().out
    assert "-b [binding]" in out
    assert "--durability" in out
    assert runner.configs == []


def test_unknown_flag_exits_two_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-x"], environ={}, runner=Recorder()) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: -x" in err
    assert "-b [binding]" in err
    assert "Traceback" not in err


def test_invalid_environment_exits_one(
    capsys: pytest.CaptureFixture[str], environ: dict[str, str]
) -> None:
    runner = Recorder()
    assert main(["-e", "test"], environ=environ, runner=runner) == 1
    err = capsys.readouterr().err
    expected = 'Invalid environment "test": legal values are development, staging or production'
    assert err == expected + "\n"
    assert runner.configs == []


def test_production_without_password_exits_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr("minifaktory.config.SYSTEM_PASSWORD_FILE", tmp_path / "absent")
    argv = ["-e", "production", "-c", str(tmp_path), "-d", str(tmp_path)]
    assert main(argv, environ={}, runner=Recorder()) == 1
    assert "requires a password" in capsys.readouterr().err


def test_production_with_system_password_file_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    system = tmp_path / "password"
    system.write_text("packaged\n", encoding="utf-8")
    monkeypatch.setattr("minifaktory.config.SYSTEM_PASSWORD_FILE", system)
    runner = Recorder()
    argv = ["-e", "production", "-c", str(tmp_path), "-d", str(tmp_path), "-l", "error"]
    assert main(argv, environ={}, runner=runner) == 0
    assert runner.configs[0].password == "packaged"


def test_bad_toml_exits_one_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, environ: dict[str, str]
) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "broken.toml").write_text("[faktory\n", encoding="utf-8")
    assert main(["-c", str(tmp_path)], environ=environ, runner=Recorder()) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "conf.d" / "broken.toml") in err
    assert "Traceback" not in err


def test_runs_the_server_with_the_loaded_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, environ: dict[str, str]
) -> None:
    runner = Recorder()
    db = tmp_path / "jobs.db"
    argv = ["-b", "127.0.0.1:7419", "--db", str(db), "--durability", "normal"]
    assert main(argv, environ=environ, runner=runner) == 0
    [config] = runner.configs
    assert config.binding == "127.0.0.1:7419"
    assert config.db_path == db
    assert config.durability == "normal"
    lines = capsys.readouterr().err.splitlines()
    assert lines
    assert all(LOG_LINE.match(line) for line in lines)
    assert any(line.startswith("I ") and line.endswith(f"Database: {db}") for line in lines)


def test_database_location_defaults_under_home(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, environ: dict[str, str]
) -> None:
    assert main([], environ=environ, runner=Recorder()) == 0
    expected = tmp_path / ".faktory" / "db" / "minifaktory.db"
    assert f"Database: {expected}" in capsys.readouterr().err


def test_log_level_error_hides_info(
    capsys: pytest.CaptureFixture[str], environ: dict[str, str]
) -> None:
    assert main(["-l", "error"], environ=environ, runner=Recorder()) == 0
    assert capsys.readouterr().err == ""


def test_debug_level_shows_debug_lines(
    capsys: pytest.CaptureFixture[str], environ: dict[str, str]
) -> None:
    def chatty(config: Config) -> None:
        logging.getLogger("minifaktory.app").debug("booting on %s", config.binding)

    assert main(["-l", "debug"], environ=environ, runner=chatty) == 0
    err = capsys.readouterr().err
    assert re.search(r"^D \S+ booting on localhost:7419$", err, re.MULTILINE)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConfigError("bad binding"), 1),
        (StoreError("database is newer"), 1),
        (OSError(98, "Address already in use"), 1),
        (KeyboardInterrupt(), 130),
    ],
    ids=["config", "store", "oserror", "interrupt"],
)
def test_runner_failures_become_exit_codes(
    capsys: pytest.CaptureFixture[str],
    environ: dict[str, str],
    error: BaseException,
    status: int,
) -> None:
    assert main([], environ=environ, runner=Recorder(error)) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status == 1:
        assert re.search(r"^E \S+ Unable to run minifaktory: ", err, re.MULTILINE)


def test_default_runner_is_app_run_forever(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]
) -> None:
    runner = Recorder()
    fake_app = types.ModuleType("minifaktory.app")
    fake_app.run_forever = runner  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "minifaktory.app", fake_app)
    assert main([], environ=environ) == 0
    assert len(runner.configs) == 1


def test_reads_sys_argv_and_os_environ(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["minifaktory", "-e", "nowhere"])
    monkeypatch.delenv("FAKTORY_ENV", raising=False)
    assert main(runner=Recorder()) == 1
    assert 'Invalid environment "nowhere"' in capsys.readouterr().err


def test_faktory_env_from_os_environ(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKTORY_ENV", "qa")
    assert main([], runner=Recorder()) == 1
    assert 'Invalid environment "qa"' in capsys.readouterr().err


def test_logging_is_restored_after_main(environ: dict[str, str]) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    assert main(["-l", "debug"], environ=environ, runner=Recorder()) == 0
    assert root.handlers == handlers
    assert root.level == level


def test_formatter_layout() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    record.created = 1795413600.25  # 2026-11-23T06:00:00.250Z
    record.msecs = 250.0
    assert FaktoryFormatter().format(record) == "W 2026-11-23T06:00:00.250Z hello you"


@pytest.mark.parametrize(
    ("level", "letter"),
    [(logging.DEBUG, "D"), (logging.INFO, "I"), (logging.ERROR, "E"), (logging.CRITICAL, "F")],
)
def test_formatter_letters(level: int, letter: str) -> None:
    record = logging.LogRecord("x", level, __file__, 1, "m", None, None)
    assert FaktoryFormatter().format(record).startswith(f"{letter} ")


def test_formatter_appends_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, sys.exc_info())
    text = FaktoryFormatter().format(record)
    assert text.splitlines()[0].endswith(" m")
    assert "ValueError: boom" in text


def test_logging_to_filters_by_level(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("minifaktory.test")
    with logging_to(sys.stderr, "warn"):
        log.info("quiet")
        log.warning("loud")
    log.warning("after")
    err = capsys.readouterr().err
    assert "quiet" not in err
    assert "after" not in err
    assert re.match(r"^W \S+ loud$", err)


def test_json_log_lines_carry_the_records_data(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("minifaktory.test")
    with logging_to(sys.stderr, "info", "json"):
        log.warning("worker %s is late", "w-1", extra={"wid": "w-1", "jids": ["a", "b"]})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke")
    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines()[:2])
    assert first["level"] == "warn" and first["message"] == "worker w-1 is late"
    assert (first["wid"], first["jids"], first["logger"]) == ("w-1", ["a", "b"], "minifaktory.test")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "error" and "ValueError: boom" in second["error"]


def test_log_format_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--log-format", "xml"], environ={}, runner=lambda config: None) == 1
    assert "log format" in capsys.readouterr().err
    seen: list[str] = []
    assert main(["--log-format", "json"], environ={},
                runner=lambda config: seen.append(config.log_format)) == 0  # fmt: skip
    assert seen == ["json"]


def test_python_dash_m(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "minifaktory", "-v"],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": ""},
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("minifaktory ")


def test_python_dash_m_config_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "minifaktory", "-e", "bogus"],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": ""},
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith('Invalid environment "bogus"')
    assert "Traceback" not in result.stderr
