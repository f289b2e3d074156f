"""The state directory: private to its owner, and no planted link is followed.

The state dir (``paths.state_dir``) holds the registry, the run lock, logs,
runs and releases. It is created ``0700`` and nightshift's files ``0600``
(the CLI also sets ``umask 077``, which children inherit). Every file
nightshift opens there is opened with ``O_NOFOLLOW``: a symbolic link planted
at one of its names (to truncate or overwrite another file of the user's) is
refused with a :class:`~daemon.errors.StateDirError` that names it. The only
link nightshift writes is ``current``.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from daemon.errors import StateDirError

DIR_MODE = 0o700
FILE_MODE = 0o600


def planted_link_error(path: Path) -> StateDirError:
    """The error for a symbolic link found where nightshift writes a file."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return StateDirError(
        f"Refusing to follow the symbolic link {path} -> {target}: nightshift writes no links in "
        f"its state dir but `current`. Remove it (rm {path}) and check who planted it."
    )


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700; tighten it when it is ours and wider.

    Returns:
        ``path``.

    Raises:
        StateDirError: it cannot be created (read-only file system, permissions),
            or it is a link planted inside an existing state dir.
    """
    path = Path(path)
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        st = path.stat()
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            path.chmod(DIR_MODE)
    except PermissionError as exc:
        raise StateDirError(
            f"Cannot create or use the directory {path} ({exc.strerror}); make it writable by "
            f"this user (chmod u+rwx) or set paths.state_dir to a directory you own."
        ) from None
    except OSError as exc:
        raise StateDirError(
            f"Cannot create the directory {path} ({exc.strerror}); check the disk and "
            f"paths.state_dir."
        ) from None
    return path


def open_private(path: Path, flags: int, mode: int = FILE_MODE) -> int:
    """``os.open`` a file in the state dir without following a symbolic link.

    Args:
        path: the file.
        flags: ``os.O_*`` flags (``O_NOFOLLOW`` and ``O_CLOEXEC`` are added).
        mode: permission bits for a new file (default 0600).

    Returns:
        The file descriptor.

    Raises:
        StateDirError: ``path`` is a symbolic link.
        OSError: any other failure (missing, permissions, disk full).
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.EEXIST and Path(path).is_symlink()):
            raise planted_link_error(Path(path)) from None
        raise


def write_private(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Write a file atomically (new temp file, then rename), mode 0600, following no link.

    Args:
        durable: fsync the file and its directory (for the promotion intent).

    Raises:
        StateDirError: a link is planted at ``path``.
        OSError: the write failed (disk full...); ``path`` is unchanged then.
    """
    path = Path(path)
    if path.is_symlink():
        raise planted_link_error(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename, unlink or symlink inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


DISK_FULL_FREE_BYTES = 64 * 1024 * 1024
"""Below this much free space (bytes) a failure is reported as a likely full disk."""


def disk_full_hint(path: Path, text: str = "") -> str | None:
    """``disk full: 12.0 MB free on <path>`` when ``text`` shows ENOSPC or the file
    system holding ``path`` is nearly full, else None."""
    from daemon.resources import format_bytes, free_disk_bytes

    try:
        free = free_disk_bytes(path)
    except OSError:
        free = None
    said = "no space left on device" in text.lower() or "database or disk is full" in text.lower()
    if said or (free is not None and free < DISK_FULL_FREE_BYTES):
        where = f"{format_bytes(free)} free on the disk holding {path}" if free is not None else str(path)
        return f"disk full ({where}): free space and run again"
    return None


RESERVE_FILE = ".reserve"
RESERVE_BYTES = 4 * 1024 * 1024
"""Space kept aside in the state dir (bytes) so a run that fills the disk can
still record why it failed: :func:`release_reserve` frees it first."""


def ensure_reserve(state_dir: Path) -> bool:
    """Create ``<state_dir>/.reserve`` (:data:`RESERVE_BYTES` of zeros) when missing.

    Returns:
        True when the reserve is in place (False: no space for it now).
    """
    path = Path(state_dir) / RESERVE_FILE
    if path.is_file() and not path.is_symlink() and path.stat().st_size >= RESERVE_BYTES:
        return True
    try:
        write_private(path, b"\0" * RESERVE_BYTES, durable=True)
        return True
    except OSError:
        return False


def release_reserve(state_dir: Path) -> None:
    """Delete the reserve, freeing its space for the failure record."""
    try:
        (Path(state_dir) / RESERVE_FILE).unlink()
    except OSError:
        pass
