"""Server configuration: one frozen struct, defaults as named constants.

Loading from flags, environment and ``conf.d/*.toml`` lives in ``load_config``
(see spec §6). Everything here is pure apart from reading the ``conf.d`` files
and password files: no sockets, no SQLite.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

from minifaktory.cron import parse_cron
from minifaktory.errors import ConfigError
from minifaktory.limits import parse_limits
from minifaktory.metrics import StatsdConfig, parse_statsd
from minifaktory.throttles import parse_throttles

#: The Faktory release whose wire behaviour minifaktory follows (reported by INFO).
FAKTORY_VERSION = "1.10.0"
DEFAULT_PORT = 7419
DEFAULT_WEB_PORT = 7420
DEFAULT_BINDING = f"localhost:{DEFAULT_PORT}"
DEFAULT_WEB_BINDING = f"localhost:{DEFAULT_WEB_PORT}"
DB_FILENAME = "minifaktory.db"
ENVIRONMENTS = ("development", "staging", "production")
LOG_LEVELS = ("error", "warn", "info", "debug")
LOG_FORMATS = ("plain", "json")
DURABILITIES = ("full", "normal")
#: Faktory's flag defaults; a development server swaps the two directories for ``~/.faktory``.
DEFAULT_DATA_DIR = "/var/lib/faktory/db"
DEFAULT_CONFIG_DIR = "/etc/faktory"
#: Written by Faktory's deb/rpm packages; used in staging/production when no password is set.
SYSTEM_PASSWORD_FILE = Path("/etc/faktory/password")
#: What a TOML password is replaced with in ``Config.toml`` so the document can be logged.
MASKED_PASSWORD = "********"  # noqa: S105 (a mask, not a secret)
SKIP_PASSWORD_VALUES = ("1", "true", "yes")
PASSWORD_REQUIRED = (
    "faktory requires a password to be set in staging or production, see the Security wiki page"  # noqa: S105
)

#: Faktory closes a connection that has not finished its HELLO within 2 s.
HANDSHAKE_TIMEOUT = 2.0
#: A blocking FETCH waits this long before answering ``$-1``.
FETCH_TIMEOUT = 2.0
#: Longest command line accepted; longer lines get an ``-ERR`` and are dropped.
MAX_LINE_BYTES = 16 * 1024 * 1024
#: Faktory (OSS) refuses connections past this count; ``[faktory] max_connections`` changes it.
MAX_CONNECTIONS = 2000

Durability = Literal["full", "normal"]
Environment = Literal["development", "staging", "production"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Everything a server needs to start.

    ``durability="full"`` survives power loss (fsync on every commit);
    ``"normal"`` survives a crash of the process only.
    """

    environment: Environment = "development"
    binding: str = DEFAULT_BINDING
    web_binding: str = DEFAULT_WEB_BINDING
    log_level: str = "info"
    log_format: str = "plain"
    data_dir: Path | None = None
    config_dir: Path | None = None
    #: Explicit database file; overrides ``data_dir``. ``":memory:"`` is allowed.
    db_path: Path | str | None = None
    unix_socket: Path | None = None
    password: str = ""
    durability: Durability = "full"
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    fetch_timeout: float = FETCH_TIMEOUT
    max_line_bytes: int = MAX_LINE_BYTES
    #: Connections past this count are refused after HELLO (``[faktory] max_connections``).
    max_connections: int = MAX_CONNECTIONS
    #: The merged ``conf.d`` TOML document, for features that read their own tables.
    toml: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The conf.d file each ``[[cron]]`` entry came from, in order (for error messages).
    cron_sources: tuple[str, ...] = ()
    #: Where to send DogStatsD metrics (conf.d and ``DD_*`` variables); None: nowhere.
    statsd: StatsdConfig | None = None

    def resolved_db_path(self) -> Path | str:
        """The SQLite file this configuration points at."""
        if self.db_path is not None:
            return self.db_path
        base = self.data_dir if self.data_dir is not None else default_data_dir(self.environment)
        return base / DB_FILENAME


def default_data_dir(environment: str, home: Path | None = None) -> Path:
    """Faktory keeps development data under the home directory, production under /var/lib."""
    if environment == "development":
        return (home if home is not None else Path.home()) / ".faktory" / "db"
    return Path(DEFAULT_DATA_DIR)


def default_config_dir(environment: str, home: Path | None = None) -> Path:
    """Faktory's config dir: ``~/.faktory`` in development, ``/etc/faktory`` otherwise."""
    if environment == "development":
        return (home if home is not None else Path.home()) / ".faktory"
    return Path(DEFAULT_CONFIG_DIR)


def split_binding(binding: str, default_port: int) -> tuple[str, int]:
    """``"host:port"`` → (host, port); ``":7419"`` means every interface, as in Faktory."""
    host, sep, port = binding.rpartition(":")
    if not sep:
        return binding or "localhost", default_port
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


# --------------------------------------------------------------------------- command line

USAGE = """\
-b [binding]\tNetwork binding (use :7419 to listen on all interfaces), default: localhost:7419
-w [binding]\tWeb UI binding (use :7420 to listen on all interfaces), default: localhost:7420
-e [env]\tSet environment (development, staging, production), default: development
-l [level]\tSet logging level (error, warn, info, debug), default: info
-d [dir]\tStorage directory, default: /var/lib/faktory/db (~/.faktory/db in development)
-c [dir]\tConfig directory, default: /etc/faktory (~/.faktory in development)
--db [path]\tSQLite database file, overrides -d (":memory:" for a throwaway server)
--socket [path]\tAlso listen on this Unix socket
--durability [full|normal]\tfull: fsync every commit (default); normal: survive process crashes only
--log-format [plain|json]\tplain: Faktory's log lines (default); json: one JSON object per line
-v\t\tShow version and license information
-h\t\tThis help screen"""


class UsageError(ConfigError):
    """The command line itself is malformed; the caller should show ``USAGE``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Flags:
    """The raw command line, before environment variables and ``conf.d`` are applied."""

    binding: str = DEFAULT_BINDING
    web_binding: str = DEFAULT_WEB_BINDING
    #: ``None`` means "not given": ``$FAKTORY_ENV`` or ``development`` decides.
    environment: str | None = None
    log_level: str = "info"
    log_format: str = "plain"
    data_dir: str = DEFAULT_DATA_DIR
    config_dir: str = DEFAULT_CONFIG_DIR
    db: str | None = None
    socket: str | None = None
    durability: str = "full"
    version: bool = False
    help: bool = False


class _Parser(argparse.ArgumentParser):
    """An argparse parser that raises instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # Only add_argument's own checks use it (``cli.USAGE`` is the help text); a set
        # width spares the server importing shutil, bz2 and lzma for the terminal's.
        return argparse.HelpFormatter(prog=self.prog, width=80)


def _build_parser() -> argparse.ArgumentParser:
    """Faktory's single-dash flags plus minifaktory's long options."""
    parser = _Parser(prog="minifaktory", add_help=False, allow_abbrev=False)
    parser.add_argument("-b", dest="binding", default=DEFAULT_BINDING)
    parser.add_argument("-w", dest="web_binding", default=DEFAULT_WEB_BINDING)
    parser.add_argument("-e", dest="environment", default=None)
    parser.add_argument("-l", dest="log_level", default="info")
    parser.add_argument("-d", dest="data_dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("-c", dest="config_dir", default=DEFAULT_CONFIG_DIR)
    parser.add_argument("--db", dest="db", default=None)
    parser.add_argument("--socket", dest="socket", default=None)
    parser.add_argument("--durability", dest="durability", default="full")
    parser.add_argument("--log-format", dest="log_format", default="plain")
    parser.add_argument("-v", "--version", dest="version", action="store_true")
    parser.add_argument("-h", "--help", dest="help", action="store_true")
    return parser


def parse_flags(argv: Sequence[str]) -> Flags:
    """Parse the command line; raises ``UsageError`` for unknown flags or missing values."""
    namespace = _build_parser().parse_args(list(argv))
    return Flags(**vars(namespace))


# --------------------------------------------------------------------------- loading


def load_config(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    system_password_file: Path | None = None,
) -> Config:
    """Build the server configuration from flags, environment and ``conf.d`` (spec §6).

    ``-v`` and ``-h`` are ignored here; the command line handles them first.
    ``system_password_file`` defaults to ``SYSTEM_PASSWORD_FILE``.
    Raises ``ConfigError`` with a message fit for the operator.
    """
    return config_from_flags(parse_flags(argv), environ, system_password_file=system_password_file)


def config_from_flags(
    flags: Flags,
    environ: Mapping[str, str],
    *,
    system_password_file: Path | None = None,
) -> Config:
    """Apply environment variables and ``conf.d`` to already parsed flags."""
    environment = resolve_environment(flags.environment, environ)
    data_dir, config_dir = _directories(flags, environment, environ)
    document = read_conf_d(config_dir)
    sources = cron_sources(config_dir)
    # Fail at start-up, naming the file and entry, rather than when the server starts.
    parse_cron(document, sources)
    parse_throttles(document)
    parse_limits(document)
    statsd = parse_statsd(document, environ)
    password = resolve_password(document, environment, environ, system_password_file)
    return Config(
        environment=environment,
        binding=_binding(flags.binding, DEFAULT_BINDING, document, "faktory"),
        web_binding=_binding(flags.web_binding, DEFAULT_WEB_BINDING, document, "web"),
        log_level=_check_choice("log level", flags.log_level, LOG_LEVELS),
        log_format=_check_choice("log format", flags.log_format, LOG_FORMATS),
        data_dir=data_dir,
        config_dir=config_dir,
        db_path=_db_path(flags.db),
        unix_socket=Path(flags.socket) if flags.socket is not None else None,
        password=password,
        durability=cast(Durability, _check_choice("durability", flags.durability, DURABILITIES)),
        max_connections=max_connections(document),
        toml=mask_password(document),
        cron_sources=sources,
        statsd=statsd,
    )


def resolve_environment(flag_value: str | None, environ: Mapping[str, str]) -> Environment:
    """``-e`` wins, then a non-empty ``$FAKTORY_ENV``, then ``development``."""
    value = flag_value if flag_value is not None else environ.get("FAKTORY_ENV") or "development"
    if value not in ENVIRONMENTS:
        raise ConfigError(
            f'Invalid environment "{value}": legal values are development, staging or production'
        )
    return cast(Environment, value)


def _check_choice(what: str, value: str, legal: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``legal``, else raise ``ConfigError``."""
    if value not in legal:
        raise ConfigError(f'Invalid {what} "{value}": legal values are {", ".join(legal)}')
    return value


def _home(environ: Mapping[str, str]) -> Path:
    """The home directory: ``$HOME`` from ``environ`` if set, else the account's."""
    home = environ.get("HOME")
    return Path(home) if home else Path.home()


def database_path(
    db: str | None, data_dir: str | None, environment: str | None, environ: Mapping[str, str]
) -> Path | str:
    """The file a server started with ``--db``, ``-d`` and ``-e`` would use (for the tools)."""
    if db is not None:
        return _db_path(db) or db
    flags = Flags(environment=environment, data_dir=data_dir or DEFAULT_DATA_DIR)
    data, _ = _directories(flags, resolve_environment(environment, environ), environ)
    return data / DB_FILENAME


def _directories(flags: Flags, environment: str, environ: Mapping[str, str]) -> tuple[Path, Path]:
    """Storage and config dirs; development moves the untouched defaults under ``~/.faktory``."""
    data_dir, config_dir = Path(flags.data_dir), Path(flags.config_dir)
    if environment == "development":
        if flags.data_dir == DEFAULT_DATA_DIR:
            data_dir = default_data_dir(environment, _home(environ))
        if flags.config_dir == DEFAULT_CONFIG_DIR:
            config_dir = default_config_dir(environment, _home(environ))
    return data_dir, config_dir


def _db_path(value: str | None) -> Path | str | None:
    """``--db``: a file path, or SQLite's ``:memory:`` kept as a string."""
    if value is None or value == ":memory:":
        return value
    return Path(value)


def _binding(flag_value: str, default: str, document: Mapping[str, Any], table: str) -> str:
    """A flag left at its default yields to ``[table] binding`` from TOML."""
    binding = flag_value
    if binding == default:
        binding = toml_string(document, table, "binding", default)
    try:
        split_binding(binding, 0)
    except ValueError:
        raise ConfigError(f'Invalid binding "{binding}": expected host:port') from None
    return binding


def max_connections(document: Mapping[str, Any]) -> int:
    """``[faktory] max_connections`` (a minifaktory extension), else Faktory's 2000."""
    section = document.get("faktory")
    value = section.get("max_connections") if isinstance(section, dict) else None
    if value is None:
        return MAX_CONNECTIONS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"[faktory] max_connections must be a whole number of at least 1, not {value!r}"
        )
    return value


def toml_string(document: Mapping[str, Any], table: str, key: str, default: str = "") -> str:
    """``document[table][key]`` if it is a string, else ``default`` (Faktory's stringConfig)."""
    section = document.get(table)
    if isinstance(section, dict):
        value = section.get(key)
        if isinstance(value, str):
            return value
    return default


# --------------------------------------------------------------------------- conf.d


def conf_d_files(config_dir: Path) -> list[Path]:
    """``<config_dir>/conf.d/*.toml`` in lexical order; none if the directory is missing."""
    conf_d = config_dir / "conf.d"
    if not conf_d.is_dir():
        return []
    try:
        entries = list(conf_d.iterdir())
    except OSError as exc:
        raise ConfigError(f"Unable to list {conf_d}: {exc.strerror or exc}") from None
    return sorted((p for p in entries if p.name.endswith(".toml")), key=lambda p: p.name)


def _read_text(path: Path) -> str:
    """A file's UTF-8 text; any failure becomes a ``ConfigError`` naming the file."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"Unable to read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Unable to read {path}: not UTF-8 ({exc.reason})") from None


def read_conf_d(config_dir: Path) -> dict[str, Any]:
    """Concatenate the ``conf.d`` files (each plus a newline) and parse them as ONE document.

    So ``[[cron]]`` arrays merge across files, and a ``[table]`` defined in two
    files is an error, exactly as in Faktory.
    """
    files = conf_d_files(config_dir)
    texts = [_read_text(path) for path in files]
    try:
        return tomllib.loads("".join(text + "\n" for text in texts))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(str(exc), config_dir / "conf.d", files, texts)) from None


_CRON_HEADER = re.compile(r"^\s*\[\[\s*cron\s*\]\]", re.MULTILINE)


def cron_sources(config_dir: Path) -> tuple[str, ...]:
    """The file each ``[[cron]]`` entry of the merged document comes from, in order."""
    return tuple(
        str(path)
        for path in conf_d_files(config_dir)
        for _ in _CRON_HEADER.finditer(_read_text(path))
    )


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = " (at end of document)"


def _toml_error(message: str, conf_d: Path, files: Sequence[Path], texts: Sequence[str]) -> str:
    """Turn tomllib's position in the concatenation into a file name and local line."""
    names = ", ".join(path.name for path in files)
    context = f"the files in {conf_d} are parsed as one TOML document: {names}"
    if message.endswith(_AT_END) and files:
        return f"Invalid TOML at the end of {files[-1]}: {message[: -len(_AT_END)]} ({context})"
    match = _TOML_POSITION.search(message)
    if match is None:
        return f"Invalid TOML in {conf_d}: {message} ({context})"
    reason, line, column = message[: match.start()], int(match[1]), match[2]
    for path, text in zip(files, texts, strict=True):
        span = text.count("\n") + 1
        if line <= span:
            return f"Invalid TOML in {path}, line {line}, column {column}: {reason} ({context})"
        line -= span
    return f"Invalid TOML in {conf_d}: {reason} ({context})"


# --------------------------------------------------------------------------- passwords


def skip_password(environ: Mapping[str, str]) -> bool:
    """``FAKTORY_SKIP_PASSWORD`` of ``1``, ``true`` or ``yes`` lifts the password requirement."""
    return environ.get("FAKTORY_SKIP_PASSWORD") in SKIP_PASSWORD_VALUES


def resolve_password(
    document: Mapping[str, Any],
    environment: str,
    environ: Mapping[str, str],
    system_password_file: Path | None = None,
) -> str:
    """The server password, following Faktory's resolution order (spec §6.3)."""
    if "FAKTORY_PASSWORD" in environ:
        password = environ["FAKTORY_PASSWORD"]
    else:
        password = toml_string(document, "faktory", "password")
    required = environment != "development" and not skip_password(environ)
    source: Path | None = None
    if password.startswith("/"):
        source = Path(password)
    elif not password and required:
        fallback = SYSTEM_PASSWORD_FILE if system_password_file is None else system_password_file
        source = fallback if _exists(fallback) else None
    if source is not None:
        password = _read_text(source).strip()
    if not password and required:
        raise ConfigError(PASSWORD_REQUIRED)
    return password


def _exists(path: Path) -> bool:
    """``True`` if ``path`` can be stat'ed; Faktory treats any stat error as "no file"."""
    try:
        path.stat()
    except OSError:
        return False
    return True


def mask_password(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with any ``[faktory] password`` masked (in a copy), so it can be logged."""
    section = document.get("faktory")
    if not (isinstance(section, dict) and toml_string(document, "faktory", "password")):
        return document
    return {**document, "faktory": {**section, "password": MASKED_PASSWORD}}
