"""Keyed pseudonymisation: HMAC-SHA256 tokens and IP generalisation.

A bare ``sha256(email)`` is not pseudonymisation: anyone with a list of emails can
rebuild the mapping. Tokens here are HMAC-SHA256 under a secret key that lives outside
the warehouse — ``LETHE_PSEUDONYM_KEY`` or a key file (``LETHE_PSEUDONYM_KEY_FILE``,
default ``$LETHE_HOME/pseudonym.key``) — so the warehouse alone cannot be reversed.

SQL computes the same tokens without ever seeing the key in its text: the key's inner
and outer pads are set as DuckDB session variables on each connection
(``install_key``), and ``hmac_sha256`` in dbt reads them with ``getvariable``. Session
variables live in the connection, not in the database file, the WAL or dbt's compiled
SQL. Measured here: about 0.5 M tokens/s including writing the table (2 M in 4 s).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from pipelines.settings import LethePaths

KEY_ENV = "LETHE_PSEUDONYM_KEY"
KEY_FILE_ENV = "LETHE_PSEUDONYM_KEY_FILE"
IPAD_VARIABLE = "lethe_hmac_ipad"
OPAD_VARIABLE = "lethe_hmac_opad"
MIN_KEY_BYTES = 16
_BLOCK = 64  # SHA-256 block size


class MissingKeyError(RuntimeError):
    """No pseudonymisation key is configured; the message says where to put one."""


def key_file_path() -> Path:
    configured = os.environ.get(KEY_FILE_ENV)
    return Path(configured).expanduser() if configured else LethePaths.resolve().home / "pseudonym.key"


def load_key() -> bytes:
    """The HMAC key: the env var if set, else the key file. Never logged, never stored."""
    value = os.environ.get(KEY_ENV)
    if value is None:
        path = key_file_path()
        if not path.exists():
            raise MissingKeyError(
                f"no pseudonymisation key: set {KEY_ENV} or create a key file with "
                f"`lethe keygen` (looked for {path})"
            )
        value = path.read_text(encoding="utf-8").strip()
    key = value.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise MissingKeyError(f"the pseudonymisation key must be at least {MIN_KEY_BYTES} bytes")
    return key


def create_key_file(path: Path | None = None) -> tuple[Path, bool]:
    """Write a new random key (owner-only permissions) unless one exists. (path, created)."""
    path = path or key_file_path()
    if path.exists():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path, True


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's inner and outer padded keys (RFC 2104), so SQL needs only two sha256 calls."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def hmac_token(value: str | None, key: bytes | None = None) -> str | None:
    """Hex HMAC-SHA256 of a value that is already normalised (e.g. a lower-cased email)."""
    if value is None:
        return None
    return hmac.new(key or load_key(), value.encode("utf-8"), hashlib.sha256).hexdigest()


def install_key(con, key: bytes | None = None) -> None:
    """Make the key usable by SQL on this connection only (see module docstring)."""
    ipad, opad = hmac_pads(key or load_key())
    con.execute(f"SET VARIABLE {IPAD_VARIABLE} = ?", [ipad])
    con.execute(f"SET VARIABLE {OPAD_VARIABLE} = ?", [opad])


def hmac_sql(expr: str) -> str:
    """SQL for the hex HMAC of a text expression; the same formula as the dbt macro."""
    return (
        f"sha256(getvariable('{OPAD_VARIABLE}') || "
        f"unhex(sha256(getvariable('{IPAD_VARIABLE}') || encode({expr}))))"
    )


def generalise_ip(value: str | None) -> str | None:
    """IPv4 → its /24, IPv6 → its /48 (IPv4-mapped IPv6 counts as IPv4). Invalid → None."""
    if value is None:
        return None
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
