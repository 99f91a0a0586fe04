"""Who Inlet is when it sends mail: the signing key of its Message-IDs, its domain, its loop token.

Shared by the outbox (which stamps them on emails) and the email intake (which
recognises replies to them and Inlet's own mail coming back): both must call
:func:`message_id_secret` and :func:`loop_token` so they agree.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.config import secret
from gateway.errors import ConfigError
from parsers.email import EmailOptions

SECRET_FILE = "message-id.secret"  # noqa: S105 -- a file name, not a secret


def message_id_secret(config) -> bytes:
    """The key that signs Inlet's Message-IDs.

    From the environment variable ``[notifications] message_id_secret_env``
    names, else from ``{data_dir}/message-id.secret``, generated once (mode
    0600). Every process of one installation must see the same key.
    """
    value = secret(config.notifications.message_id_secret_env)
    if value:
        return value.encode()
    path = Path(config.inlet.data_dir) / SECRET_FILE
    try:
        return _read_or_create(path)
    except OSError as exc:
        raise ConfigError(f"cannot read or create the Message-ID key {path}: {exc.strerror}") from None


def _read_or_create(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:  # O_EXCL: when two processes race, one creates and both read the winner's key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def message_id_domain(config) -> str:
    """The right-hand side of Inlet's Message-IDs."""
    section = config.notifications
    return section.message_id_domain or section.from_address.rpartition("@")[2] or "inlet.invalid"


def loop_token(config) -> str:
    """The value of the ``X-Loop`` header on everything Inlet sends."""
    return config.notifications.loop_token or config.notifications.from_address.strip().lower()


def email_options(config, **overrides) -> EmailOptions:
    """EmailOptions for the email parser that agree with what the outbox sends."""
    values = dict(
        ref_prefix=config.inlet.ref_prefix,
        own_addresses=(config.notifications.from_address.strip().lower(),),
        loop_token=loop_token(config),
        message_id_secret=message_id_secret(config),
        message_id_domain=message_id_domain(config),
    )
    values.update(overrides)
    return EmailOptions(**values)
