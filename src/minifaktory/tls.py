"""TLS as Faktory 1.9+ does it: two fixed file names in the config directory.

When both ``<config_dir>/private.key.pem`` and ``<config_dir>/public.cert.pem``
exist, the command port and the Web UI serve TLS 1.2 or later (spec §6.4); when
neither exists they stay plain. Anything in between is a ``ConfigError`` that
names the file and what is wrong with it. No sockets here: only files and an
``ssl.SSLContext``.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import NoReturn

from minifaktory.errors import ConfigError

KEY_FILE = "private.key.pem"
CERT_FILE = "public.cert.pem"
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKERS = (b"-----BEGIN PRIVATE KEY-----", b"-----BEGIN RSA PRIVATE KEY-----",
                b"-----BEGIN EC PRIVATE KEY-----")  # fmt: skip
_ENCRYPTED_MARKERS = (b"-----BEGIN ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")


def tls_files(config_dir: Path | None) -> tuple[Path, Path] | None:
    """``(key, cert)`` when both files exist, ``None`` when neither does."""
    if config_dir is None:
        return None
    key, cert = config_dir / KEY_FILE, config_dir / CERT_FILE
    present = {path: path.exists() for path in (key, cert)}
    if not any(present.values()):
        return None
    missing = [path for path, there in present.items() if not there]
    if missing:
        found = key if present[key] else cert
        raise ConfigError(
            f"TLS needs both {KEY_FILE} and {CERT_FILE} in {config_dir}: found {found.name} "
            f"but {missing[0]} is missing (add it, or remove {found.name} to serve plain TCP)"
        )
    return key, cert


def server_context(config_dir: Path | None) -> ssl.SSLContext | None:
    """The server's ``SSLContext`` from the config directory's key pair, or ``None``."""
    files = tls_files(config_dir)
    return None if files is None else load_context(*files)


def load_context(key: Path, cert: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for ``cert`` (PEM, chain allowed) and its ``key`` (PEM)."""
    cert_pem, key_pem = _read(cert), _read(key)
    if _CERT_MARKER not in cert_pem:
        raise ConfigError(f"{cert} is not a PEM certificate (no {_CERT_MARKER.decode()} line)")
    if any(marker in key_pem for marker in _ENCRYPTED_MARKERS):
        raise ConfigError(f"{key} is encrypted: the server needs the private key unencrypted")
    if not any(marker in key_pem for marker in _KEY_MARKERS):
        raise ConfigError(
            f"{key} is not a PEM private key (no -----BEGIN PRIVATE KEY----- line or similar)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"the private key {key} does not match the certificate {cert}"
            ) from None
        raise ConfigError(
            f"Unable to load the TLS certificate {cert} with the key {key}: "
            f"{exc.reason or exc} (check that both are valid PEM)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"Unable to load the TLS files {cert}, {key}: {exc}") from None
    return context


def _read(path: Path) -> bytes:
    """A file's bytes; any failure becomes a ``ConfigError`` naming the file."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Unable to read {path}: {exc.strerror or exc}") from None


def _no_password() -> NoReturn:
    """Never let OpenSSL prompt on the terminal for a key's passphrase."""
    raise ConfigError("the TLS private key is encrypted: the server needs it unencrypted")
