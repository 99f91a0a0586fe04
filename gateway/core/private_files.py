"""Inlet's local files are owner-only: folders 0700, files 0600, whatever the umask.

The SQLite database (raw mail, attachments, password hashes), its ``-wal`` and ``-shm`` files, the
data folder, the generated keys and the pid file are created here or through here. SQLite gives the
``-wal``/``-shm`` files the mode of the database file, so creating that file 0600 first is enough;
``inlet`` also sets its umask to 077 at start, for whatever else a library creates. Existing files
are not changed: :func:`too_open` lists those wider than owner-only, for ``inlet check``.

Secrets are written atomically (a temporary file, fsync, then a hard link or rename into place):
a process that starts while another writes never reads half a key.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def restrict_umask() -> int:
    """Make everything this process creates owner-only; returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as a folder, created 0700 (with its missing parents) when it does not exist yet."""
    folder = Path(path)
    if not folder.is_dir():
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return folder


def create_private_file(path: str | os.PathLike) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (its folder 0700 if missing)."""
    target = Path(path)
    private_dir(target.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def write_private(path: str | os.PathLike, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically with mode 0600: temporary file, fsync, then into place.

    ``exclusive``: never replace an existing file (returns False when one is already there, and
    leaves it as it is); two processes racing to create a key both end up with the first one's.
    Otherwise the file is replaced atomically. Returns True when this call's data is in place.
    """
    target = Path(path)
    folder = private_dir(target.parent)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if exclusive:
            try:
                os.link(temporary, target)  # atomic, and fails if the name exists: the first writer wins
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links
                if target.exists():
                    return False
                os.replace(temporary, target)
        else:
            os.replace(temporary, target)
        _sync_folder(folder)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _sync_folder(folder: Path) -> None:
    """Make the new name durable (a crash after this keeps the file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the file's own data is synced
    finally:
        os.close(fd)


def too_open(paths) -> list[str]:
    """One line per existing path (file or folder) that group or others may read, write or enter."""
    lines = []
    seen = set()
    for path in paths:
        target = Path(path)
        if target in seen:
            continue
        seen.add(target)
        try:
            info = target.stat()
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o077:
            continue
        wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
        kind = "folder" if stat.S_ISDIR(info.st_mode) else "file"
        lines.append(
            f"{kind} {target} has mode {mode:04o}: other users of this machine may read it (chmod {wanted:o} {target})"
        )
    return lines
