"""The `tls` settings of an exporter (the Collector's configtls client keys) and the
credentials built from them when the exporter starts.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from collector.errors import ConfigError, ConfigProblem


@dataclass(frozen=True, kw_only=True)
class TLSConfig:
    """`tls`: how an exporter secures its connection. Empty paths mean "not used"."""

    # gRPC only: plain-text connection (OTLP/HTTP decides by the endpoint's scheme).
    insecure: bool = False
    # Accept any server certificate (OTLP/HTTP only; gRPC in Python cannot do it).
    insecure_skip_verify: bool = False
    # PEM file of the CA(s) to trust instead of the system's.
    ca_file: str = ""
    # PEM files of a client certificate and its key, for mutual TLS; both or neither.
    cert_file: str = ""
    key_file: str = ""
    # The name the server certificate must carry, when it is not the endpoint's host.
    server_name_override: str = ""

    def validate(self) -> list[tuple[str, str]]:
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            other = "cert_file" if self.cert_file else "key_file"
            return [(missing, f"must be set together with {other}")]
        return []


@dataclass(frozen=True, slots=True)
class PemFiles:
    """The contents of the configured PEM files (None when not configured)."""

    ca: bytes | None
    cert: bytes | None
    key: bytes | None


def read_pem_files(tls: TLSConfig, key_path: str) -> PemFiles:
    """Reads the configured files; raises ConfigError naming every key whose file is
    unreadable (`key_path` is the exporter's, e.g. "exporters::otlp")."""
    problems: list[ConfigProblem] = []
    contents: dict[str, bytes | None] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(tls, key)
        contents[key] = None
        if not path:
            continue
        try:
            contents[key] = Path(path).read_bytes()
        except OSError as exc:
            problems.append(
                ConfigProblem(f"{key_path}::tls::{key}", f"cannot read {path}: {exc.strerror}")
            )
    if problems:
        raise ConfigError(problems)
    return PemFiles(contents["ca_file"], contents["cert_file"], contents["key_file"])


def ssl_context(tls: TLSConfig, key_path: str) -> ssl.SSLContext:
    """A client SSL context for OTLP/HTTP; raises ConfigError for unreadable files."""
    read_pem_files(tls, key_path)  # one clear error per unreadable file before ssl's own
    try:
        context = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            [ConfigProblem(f"{key_path}::tls", f"invalid certificate files: {exc}")]
        ) from exc
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
