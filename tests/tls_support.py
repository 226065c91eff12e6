"""A throwaway certificate authority and a config dir holding a key pair for 127.0.0.1."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from minifaktory.tls import CERT_FILE, KEY_FILE


@dataclass(frozen=True)
class TLSFiles:
    """A config dir with ``private.key.pem`` and ``public.cert.pem``, and the CA that signed it."""

    ca: trustme.CA
    config_dir: Path
    ca_file: Path

    @property
    def key(self) -> Path:
        return self.config_dir / KEY_FILE

    @property
    def cert(self) -> Path:
        return self.config_dir / CERT_FILE

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts the CA (hostname checks on)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def make_tls_files(base: Path, ca: trustme.CA | None = None) -> TLSFiles:
    """Issue a certificate for 127.0.0.1 and localhost into ``base/etc``."""
    ca = ca or trustme.CA()
    config_dir = base / "etc"
    config_dir.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_cert("127.0.0.1", "localhost")
    issued.private_key_pem.write_to_path(str(config_dir / KEY_FILE))
    issued.cert_chain_pems[0].write_to_path(str(config_dir / CERT_FILE))
    ca_file = base / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TLSFiles(ca, config_dir, ca_file)
