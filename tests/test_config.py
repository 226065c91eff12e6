"""Configuration loading: flags, environment variables, conf.d and passwords (spec §6, §8)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from minifaktory.config import (
    DEFAULT_BINDING,
    DEFAULT_WEB_BINDING,
    MASKED_PASSWORD,
    MAX_CONNECTIONS,
    PASSWORD_REQUIRED,
    Config,
    UsageError,
    load_config,
    mask_password,
    parse_flags,
    read_conf_d,
)
from minifaktory.errors import ConfigError


def load(
    tmp_path: Path,
    argv: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    *,
    system_password_file: Path | None = None,
) -> Config:
    """``load_config`` with a private HOME and no system password file."""
    env = {"HOME": str(tmp_path / "home"), **(environ or {})}
    pw_file = system_password_file or tmp_path / "no-such-password-file"
    return load_config(argv, env, system_password_file=pw_file)


def write_conf(config_dir: Path, name: str, text: str) -> Path:
    """Write ``config_dir/conf.d/name``."""
    conf_d = config_dir / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    path = conf_d / name
    path.write_text(text, encoding="utf-8")
    return path


def prod(tmp_path: Path, *extra: str) -> list[str]:
    """Flags for a production server whose config dir is inside ``tmp_path``."""
    return ["-e", "production", "-c", str(tmp_path / "etc"), *extra]


# --------------------------------------------------------------------------- flags and defaults


def test_development_defaults(tmp_path: Path) -> None:
    config = load(tmp_path)
    home = tmp_path / "home"
    assert config.environment == "development"
    assert config.binding == DEFAULT_BINDING == "localhost:7419"
    assert config.web_binding == DEFAULT_WEB_BINDING == "localhost:7420"
    assert config.log_level == "info"
    assert config.data_dir == home / ".faktory" / "db"
    assert config.config_dir == home / ".faktory"
    assert config.db_path is None
    assert config.unix_socket is None
    assert config.durability == "full"
    assert config.password == ""
    assert config.toml == {}
    assert config.resolved_db_path() == home / ".faktory" / "db" / "minifaktory.db"


def test_production_directories(tmp_path: Path) -> None:
    config = load(tmp_path, ["-e", "production", "-c", str(tmp_path)], {"FAKTORY_PASSWORD": "pw"})
    assert config.data_dir == Path("/var/lib/faktory/db")
    assert config.config_dir == tmp_path


def test_production_config_dir_default_is_etc(tmp_path: Path) -> None:
    flags = parse_flags(["-e", "production"])
    assert flags.config_dir == "/etc/faktory"
    assert flags.data_dir == "/var/lib/faktory/db"


def test_explicit_directories_win_in_development(tmp_path: Path) -> None:
    config = load(tmp_path, ["-d", str(tmp_path / "data"), "-c", str(tmp_path / "cfg")])
    assert config.data_dir == tmp_path / "data"
    assert config.config_dir == tmp_path / "cfg"


def test_development_replaces_the_production_default_even_if_given(tmp_path: Path) -> None:
    """Faktory compares with the default value, so ``-d /var/lib/faktory/db`` is moved too."""
    config = load(tmp_path, ["-d", "/var/lib/faktory/db"])
    assert config.data_dir == tmp_path / "home" / ".faktory" / "db"


def test_single_dash_flags(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        ["-b", "127.0.0.1:7419", "-w", "0.0.0.0:7420", "-l", "debug", "-c", str(tmp_path)],
    )
    assert config.binding == "127.0.0.1:7419"
    assert config.web_binding == "0.0.0.0:7420"
    assert config.log_level == "debug"


def test_flag_equals_form(tmp_path: Path) -> None:
    assert load(tmp_path, ["-b=:7419"]).binding == ":7419"


@pytest.mark.parametrize("level", ["error", "warn", "info", "debug"])
def test_log_levels(tmp_path: Path, level: str) -> None:
    assert load(tmp_path, ["-l", level]).log_level == level


def test_invalid_log_level(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='Invalid log level "verbose"'):
        load(tmp_path, ["-l", "verbose"])


def test_minifaktory_options(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sock = tmp_path / "f.sock"
    config = load(tmp_path, ["--db", str(db), "--socket", str(sock), "--durability", "normal"])
    assert config.db_path == db
    assert config.resolved_db_path() == db
    assert config.unix_socket == sock
    assert config.durability == "normal"


def test_memory_database_stays_a_string(tmp_path: Path) -> None:
    config = load(tmp_path, ["--db", ":memory:"])
    assert config.db_path == ":memory:"
    assert config.resolved_db_path() == ":memory:"


def test_invalid_durability(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='Invalid durability "off"'):
        load(tmp_path, ["--durability", "off"])


@pytest.mark.parametrize(
    "argv", [["-x"], ["-b"], ["--bogus"], ["stray"], ["--dur", "full"]], ids=repr
)
def test_usage_errors(tmp_path: Path, argv: list[str]) -> None:
    with pytest.raises(UsageError):
        load(tmp_path, argv)


def test_usage_error_is_a_config_error() -> None:
    assert issubclass(UsageError, ConfigError)


def test_version_and_help_flags() -> None:
    assert parse_flags(["-v"]).version
    assert parse_flags(["--version"]).version
    assert parse_flags(["-h"]).help
    assert parse_flags(["--help"]).help
    assert not parse_flags([]).version


def test_version_flag_is_ignored_by_load_config(tmp_path: Path) -> None:
    assert load(tmp_path, ["-v"]).environment == "development"


@pytest.mark.parametrize("binding", ["localhost:port", "host:"])
def test_invalid_binding(tmp_path: Path, binding: str) -> None:
    with pytest.raises(ConfigError, match="Invalid binding"):
        load(tmp_path, ["-b", binding])


# --------------------------------------------------------------------------- environment


def test_faktory_env_staging(tmp_path: Path) -> None:
    """Spec §8 case 52."""
    config = load(
        tmp_path,
        ["-c", str(tmp_path)],
        {"FAKTORY_ENV": "staging", "FAKTORY_SKIP_PASSWORD": "1"},
    )
    assert config.environment == "staging"


def test_flag_overrides_faktory_env(tmp_path: Path) -> None:
    config = load(tmp_path, ["-e", "development"], {"FAKTORY_ENV": "production"})
    assert config.environment == "development"


def test_empty_faktory_env_means_development(tmp_path: Path) -> None:
    assert load(tmp_path, [], {"FAKTORY_ENV": ""}).environment == "development"


@pytest.mark.parametrize(
    ("argv", "environ", "value"),
    [
        (["-e", "test"], {}, "test"),
        (["-e", ""], {}, ""),
        ([], {"FAKTORY_ENV": "prod"}, "prod"),
        (["-e", "Production"], {}, "Production"),
    ],
)
def test_invalid_environment(
    tmp_path: Path, argv: list[str], environ: dict[str, str], value: str
) -> None:
    message = f'Invalid environment "{value}": legal values are development, staging or production'
    with pytest.raises(ConfigError) as info:
        load(tmp_path, argv, environ)
    assert str(info.value) == message


# --------------------------------------------------------------------------- conf.d


CRON_ONE = """[[cron]]
  schedule = "*/5 * * * *"
  [cron.job]
    type = "OneJob"
    queue = "critical" # EOF newline intentionally omitted"""

CRON_TWO = """[[cron]]
  schedule = "*/5 * * * *"
  [cron.job]
    type = "TwoJob"
    queue = "critical"
"""


def test_cron_arrays_merge_in_file_name_order(tmp_path: Path) -> None:
    """Spec §8 case 51: b.toml is written first, a.toml lacks its final newline."""
    write_conf(tmp_path, "b.toml", CRON_TWO)
    write_conf(tmp_path, "a.toml", CRON_ONE)
    config = load(tmp_path, ["-c", str(tmp_path)])
    types = [entry["job"]["type"] for entry in config.toml["cron"]]
    assert types == ["OneJob", "TwoJob"]


def test_read_conf_d_lexical_order(tmp_path: Path) -> None:
    write_conf(tmp_path, "20-b.toml", '[[x]]\nn = "20"')
    write_conf(tmp_path, "10-a.toml", '[[x]]\nn = "10"')
    write_conf(tmp_path, "3-c.toml", '[[x]]\nn = "3"')
    assert [e["n"] for e in read_conf_d(tmp_path)["x"]] == ["10", "20", "3"]


def test_only_toml_files_are_read(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", "[faktory]\nbinding = ':1'\n")
    write_conf(tmp_path, "b.toml.bak", "this is not toml")
    write_conf(tmp_path, "README", "nor is this")
    assert read_conf_d(tmp_path) == {"faktory": {"binding": ":1"}}


def test_missing_config_dir_is_empty(tmp_path: Path) -> None:
    assert read_conf_d(tmp_path / "absent") == {}


def test_keys_across_files_in_different_tables(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", "[faktory]\nbinding = ':7419'")
    write_conf(tmp_path, "b.toml", "[web]\nbinding = ':7420'")
    config = load(tmp_path, ["-c", str(tmp_path)])
    assert config.binding == ":7419"
    assert config.web_binding == ":7420"


def test_duplicate_table_across_files_is_an_error(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", '[faktory]\nbinding = ":1"')
    second = write_conf(tmp_path, "b.toml", '[faktory]\npassword = "x"\n')
    with pytest.raises(ConfigError) as info:
        load(tmp_path, ["-c", str(tmp_path)])
    message = str(info.value)
    assert f"{second}, line 1" in message
    assert "a.toml, b.toml" in message
    assert "twice" in message


def test_bad_toml_names_the_file_and_its_own_line(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", "[faktory]\n\n")
    bad = write_conf(tmp_path, "b.toml", "[web]\nbinding = \n")
    with pytest.raises(ConfigError, match="Invalid TOML") as info:
        load(tmp_path, ["-c", str(tmp_path)])
    assert f"{bad}, line 2, column" in str(info.value)


def test_bad_toml_at_end_of_document_names_the_last_file(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", "[a]\n")
    last = write_conf(tmp_path, "b.toml", 'x = """never closed')
    with pytest.raises(ConfigError) as info:
        load(tmp_path, ["-c", str(tmp_path)])
    assert f"Invalid TOML at the end of {last}: Unterminated string" in str(info.value)


def test_unreadable_conf_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "conf.d" / "dir.toml").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"Unable to read .*dir\.toml"):
        load(tmp_path, ["-c", str(tmp_path)])


def test_non_utf8_conf_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "latin.toml").write_bytes(b'x = "\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin\.toml: not UTF-8"):
        load(tmp_path, ["-c", str(tmp_path)])


def test_toml_binding_used_when_flag_left_at_default(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", '[faktory]\nbinding = "0.0.0.0:7419"\n')
    assert load(tmp_path, ["-c", str(tmp_path)]).binding == "0.0.0.0:7419"
    # Faktory compares with the default, so spelling the default out still yields to TOML.
    explicit = load(tmp_path, ["-c", str(tmp_path), "-b", "localhost:7419"])
    assert explicit.binding == "0.0.0.0:7419"


def test_binding_flag_beats_toml(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", '[faktory]\nbinding = "0.0.0.0:7419"\n')
    assert load(tmp_path, ["-c", str(tmp_path), "-b", ":9000"]).binding == ":9000"


def test_web_binding_from_toml_and_flag(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", '[web]\nbinding = ":0"\n')
    assert load(tmp_path, ["-c", str(tmp_path)]).web_binding == ":0"
    assert load(tmp_path, ["-c", str(tmp_path), "-w", ":8000"]).web_binding == ":8000"


def test_non_string_toml_binding_is_ignored(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", "[faktory]\nbinding = 7419\n")
    assert load(tmp_path, ["-c", str(tmp_path)]).binding == DEFAULT_BINDING


def test_development_reads_conf_d_under_home(tmp_path: Path) -> None:
    write_conf(tmp_path / "home" / ".faktory", "a.toml", '[web]\nbinding = ":1"\n')
    assert load(tmp_path).web_binding == ":1"


# --------------------------------------------------------------------------- passwords (case 53)


def test_dev_with_toml_password_is_used_and_masked(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", '[faktory]\npassword = "cce29d6565ab7376"\n')
    config = load(tmp_path, ["-c", str(tmp_path)])
    assert config.password == "cce29d6565ab7376"
    assert config.toml["faktory"]["password"] == MASKED_PASSWORD == "********"


def test_dev_without_password(tmp_path: Path) -> None:
    assert load(tmp_path).password == ""


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_production_without_password_refuses(tmp_path: Path, environment: str) -> None:
    argv = ["-e", environment, "-c", str(tmp_path)]
    with pytest.raises(ConfigError) as info:
        load(tmp_path, argv)
    assert str(info.value) == PASSWORD_REQUIRED
    assert str(info.value) == (
        "faktory requires a password to be set in staging or production, see the Security wiki page"
    )


def test_production_with_toml_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "test-password"
    secret.write_text("foobar", encoding="utf-8")
    write_conf(tmp_path / "etc", "a.toml", f'[faktory]\npassword = "{secret}"\n')
    assert load(tmp_path, prod(tmp_path)).password == "foobar"


def test_production_with_toml_password(tmp_path: Path) -> None:
    write_conf(tmp_path / "etc", "a.toml", '[faktory]\npassword = "cce29d6565ab7376"\n')
    config = load(tmp_path, prod(tmp_path))
    assert config.password == "cce29d6565ab7376"
    assert config.toml["faktory"]["password"] == "********"


def test_production_with_env_password(tmp_path: Path) -> None:
    assert load(tmp_path, prod(tmp_path), {"FAKTORY_PASSWORD": "abc123"}).password == "abc123"


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_production_skip_password(tmp_path: Path, value: str) -> None:
    config = load(tmp_path, prod(tmp_path), {"FAKTORY_SKIP_PASSWORD": value})
    assert config.password == ""


@pytest.mark.parametrize("value", ["", "0", "no", "TRUE", "Yes", "on"])
def test_other_skip_values_do_not_skip(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="requires a password"):
        load(tmp_path, prod(tmp_path), {"FAKTORY_SKIP_PASSWORD": value})


def test_env_password_beats_toml(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", '[faktory]\npassword = "from-toml"\n')
    config = load(tmp_path, ["-c", str(tmp_path)], {"FAKTORY_PASSWORD": "from-env"})
    assert config.password == "from-env"
    assert config.toml["faktory"]["password"] == "********"


def test_empty_env_password_still_beats_toml(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", '[faktory]\npassword = "from-toml"\n')
    config = load(tmp_path, ["-c", str(tmp_path)], {"FAKTORY_PASSWORD": ""})
    assert config.password == ""


def test_empty_env_password_in_production_refuses(tmp_path: Path) -> None:
    write_conf(tmp_path / "etc", "a.toml", '[faktory]\npassword = "from-toml"\n')
    with pytest.raises(ConfigError, match="requires a password"):
        load(tmp_path, prod(tmp_path), {"FAKTORY_PASSWORD": ""})


def test_env_password_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  s3cret \n", encoding="utf-8")
    config = load(tmp_path, prod(tmp_path), {"FAKTORY_PASSWORD": str(secret)})
    assert config.password == "s3cret"


def test_password_file_in_development_is_read_too(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("devpw\n", encoding="utf-8")
    assert load(tmp_path, [], {"FAKTORY_PASSWORD": str(secret)}).password == "devpw"


def test_missing_password_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError, match=re.escape(f"Unable to read {missing}")):
        load(tmp_path, [], {"FAKTORY_PASSWORD": str(missing)})


def test_empty_password_file_in_production_refuses(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(" \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="requires a password"):
        load(tmp_path, prod(tmp_path), {"FAKTORY_PASSWORD": str(secret)})


def test_system_password_file_used_in_production(tmp_path: Path) -> None:
    system = tmp_path / "password"
    system.write_text("packaged\n", encoding="utf-8")
    config = load(tmp_path, prod(tmp_path), system_password_file=system)
    assert config.password == "packaged"


def test_system_password_file_not_used_when_skipped_or_in_development(tmp_path: Path) -> None:
    system = tmp_path / "password"
    system.write_text("packaged\n", encoding="utf-8")
    skipped = load(
        tmp_path, prod(tmp_path), {"FAKTORY_SKIP_PASSWORD": "yes"}, system_password_file=system
    )
    assert skipped.password == ""
    assert load(tmp_path, [], system_password_file=system).password == ""


def test_system_password_file_loses_to_configured_password(tmp_path: Path) -> None:
    system = tmp_path / "password"
    system.write_text("packaged\n", encoding="utf-8")
    config = load(tmp_path, prod(tmp_path), {"FAKTORY_PASSWORD": "x"}, system_password_file=system)
    assert config.password == "x"


def test_non_string_toml_password_is_ignored(tmp_path: Path) -> None:
    write_conf(tmp_path, "a.toml", "[faktory]\npassword = 1234\n")
    config = load(tmp_path, ["-c", str(tmp_path)])
    assert config.password == ""
    assert config.toml["faktory"]["password"] == 1234


def test_mask_password_copies() -> None:
    document = {"faktory": {"password": "pw", "binding": ":1"}, "web": {"password": "w"}}
    masked = mask_password(document)
    assert masked == {
        "faktory": {"password": "********", "binding": ":1"},
        "web": {"password": "w"},
    }
    assert document["faktory"]["password"] == "pw"
    assert mask_password({}) == {}


# --------------------------------------------------------------------------- max_connections


def test_max_connections_defaults_to_faktory_cap(tmp_path: Path) -> None:
    assert load(tmp_path).max_connections == MAX_CONNECTIONS == 2000
    write_conf(tmp_path, "a.toml", '[faktory]\nbinding = "localhost:7419"\n')
    assert load(tmp_path, ["-c", str(tmp_path)]).max_connections == 2000


def test_max_connections_from_toml(tmp_path: Path) -> None:
    write_conf(tmp_path, "faktory.toml", "[faktory]\nmax_connections = 10000\n")
    config = load(tmp_path, ["-c", str(tmp_path)])
    assert config.max_connections == 10000
    assert config.toml["faktory"]["max_connections"] == 10000


@pytest.mark.parametrize("value", ["0", "-5", "1.5", '"100"', "true", "[100]"])
def test_invalid_max_connections(tmp_path: Path, value: str) -> None:
    write_conf(tmp_path, "faktory.toml", f"[faktory]\nmax_connections = {value}\n")
    with pytest.raises(ConfigError, match=r"\[faktory\] max_connections must be a whole number"):
        load(tmp_path, ["-c", str(tmp_path)])
