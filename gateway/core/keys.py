"""Secrets named by the configuration: a ``*_env`` key's environment variable, and keys generated once into
``data_dir`` (the session key of the web UI, the Message-ID key of outgoing mail)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.core.private_files import write_private


def secret(env_name: str) -> str | None:
    """The value of the environment variable a ``*_env`` key names (None if unset or empty)."""
    return os.environ.get(env_name) or None if env_name else None


MIN_SECRET_LENGTH = 16  # characters; a generated key has 64


def local_secret(config, env_name: str, filename: str) -> str:
    """A key from the environment variable ``env_name``, else generated once into ``data_dir/filename``.

    The file is written atomically with mode 0600 (temporary file, fsync, link into place): when two
    processes race, both use the first one's key, and none reads a half-written one. A key shorter than
    MIN_SECRET_LENGTH (an empty or truncated file) is refused: nothing is signed with a guessable key.
    Every process of one installation must see the same key (share data_dir, or set the variable).
    """
    from_env = secret(env_name)
    if from_env:
        if len(from_env.strip()) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"the key in ${env_name} is too short ({len(from_env.strip())} characters; "
                f"at least {MIN_SECRET_LENGTH}): set a long random value"
            )
        return from_env
    path = Path(config.inlet.data_dir) / filename
    try:
        if not path.exists():
            write_private(path, (secrets.token_hex(32) + "\n").encode(), exclusive=True)
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read or create the key file {path}: {reason}") from None
    if len(key) < MIN_SECRET_LENGTH:
        what = "is empty" if not key else f"holds only {len(key)} characters (at least {MIN_SECRET_LENGTH})"
        raise ConfigError(
            f"the key file {path} {what}: refusing to sign with it. Remove the file to have a new key "
            f"generated (sessions and signed Message-IDs made with the old key stop working), or set ${env_name}"
        )
    return key
