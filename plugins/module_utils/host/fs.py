# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Symlink-safe file operations for the host engine, which runs as root among files others may rename.

Runs on the hosts: stdlib only.

Every operation on a path walks it from ``/`` one component at a time with directory file
descriptors opened ``O_NOFOLLOW``: a symlink anywhere on the way is refused, never followed, and
once a directory is open, renaming it or swapping it for a symlink afterwards changes nothing for
us (we keep working in the directory we checked). Each directory on the way must be owned by a
trusted user (root, the engine's own user, and for application paths the owners the appspec names);
a directory writable by everyone without the sticky bit is refused too. The last component is
acted on relative to its parent's descriptor (``*at`` system calls, no following); new files are
created with ``O_EXCL``, replacements go through a random temporary name in the same directory and
a rename; modes and owners are set on open descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import secrets
import stat

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1024 * 1024


class UnsafePathError(RollwrightError):
    """A path the engine refuses to act on; the message names the path and why."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"refusing {path}: {reason}")


def _components(path: str) -> list[str]:
    if not os.path.isabs(path):
        raise UnsafePathError(path, "not an absolute path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePathError(path, "contains '..'")
    return parts


def _check_dir(fd: int, shown: str, trusted_uids: frozenset | set) -> None:
    st = os.fstat(fd)
    if st.st_uid not in trusted_uids:
        raise UnsafePathError(shown, f"directory owned by uid {st.st_uid}, not by root or an owner the appspec names")
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise UnsafePathError(shown, "directory writable by everyone (without the sticky bit)")


def _open_child_dir(parent_fd: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP or _is_link_at(parent_fd, name):
            raise UnsafePathError(shown, "is a symlink (never followed by the engine)") from None
        raise


def _is_link_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(path: str, trusted_uids, create_mode: int | None = None) -> int:
    """Open directory ``path`` for ``*at`` calls, walking from ``/`` without following symlinks.

    Every directory on the way (``path`` included) must be owned by one of ``trusted_uids``. With
    ``create_mode``, missing directories are created with that mode (set with fchmod, whatever the
    umask); otherwise a missing one raises FileNotFoundError. The caller closes the descriptor.
    """
    trusted = frozenset(trusted_uids)
    fd = os.open("/", _DIR_FLAGS)
    shown = ""
    try:
        _check_dir(fd, "/", trusted)
        for name in _components(path):
            shown += "/" + name
            try:
                child = _open_child_dir(fd, name, shown)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass  # created meanwhile: opened and checked below like any other
                child = _open_child_dir(fd, name, shown)
                os.fchmod(child, create_mode)
            except NotADirectoryError:
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", shown) from None
            os.close(fd)
            fd = child
            _check_dir(fd, shown, trusted)
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_existing_part(path: str, trusted_uids) -> None:
    """Check the part of ``path`` that exists as open_dir would (no symlink, trusted owners, directories);
    stop quietly at the first missing component."""
    parts = _components(path)
    for end in range(len(parts), -1, -1):
        try:
            os.close(open_dir("/" + "/".join(parts[:end]), trusted_uids))
            return
        except (FileNotFoundError, NotADirectoryError):
            continue  # the planner reports a non-directory on the way in its own words


@contextlib.contextmanager
def parent_dir(path: str, trusted_uids, create_mode: int | None = None):
    """``with parent_dir(path, uids) as (dir_fd, name)``: the open parent of ``path`` and its last component."""
    parts = _components(path)
    if not parts:
        raise UnsafePathError(path, "is the root directory")
    fd = open_dir("/" + "/".join(parts[:-1]), trusted_uids, create_mode)
    try:
        yield fd, parts[-1]
    finally:
        os.close(fd)


@contextlib.contextmanager
def dir_fd(path: str, trusted_uids, create_mode: int | None = None):
    fd = open_dir(path, trusted_uids, create_mode)
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_at(dir_fd_: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd_, follow_symlinks=False)
    except FileNotFoundError:
        return None


def is_dir_at(dir_fd_: int, name: str) -> bool:
    st = lstat_at(dir_fd_, name)
    return st is not None and stat.S_ISDIR(st.st_mode)


def _temp_name(name: str) -> str:
    return f".{name[:200]}.rollwright-{secrets.token_hex(8)}"


def create_exclusive(dir_fd_: int, name: str, mode: int = 0o600) -> int:
    """Create ``name`` in the directory (O_EXCL, O_NOFOLLOW) and return a write descriptor."""
    return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd_)


def temp_file_at(dir_fd_: int, name: str, mode: int = 0o600) -> tuple[int, str]:
    """A new temporary file beside ``name`` (random name, O_EXCL): (descriptor, temporary name)."""
    for _attempt in range(100):
        tmp = _temp_name(name)
        try:
            return create_exclusive(dir_fd_, tmp, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {name}")


def write_stream_at(dir_fd_: int, name: str, source, mode: int = 0o600) -> str:
    """Replace ``name`` atomically with what ``source`` (a binary file object) holds: temporary file in the same
    directory, fsync, rename; never writes through a link. Returns the SHA-256 of the bytes written."""
    digest = hashlib.sha256()
    fd, tmp = temp_file_at(dir_fd_, name, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                handle.write(chunk)
                digest.update(chunk)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.rename(tmp, name, src_dir_fd=dir_fd_, dst_dir_fd=dir_fd_)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd_)
        raise
    return digest.hexdigest()


def write_bytes_at(dir_fd_: int, name: str, data: bytes, mode: int = 0o600) -> None:
    write_stream_at(dir_fd_, name, io.BytesIO(data), mode)


def read_bytes_at(dir_fd_: int, name: str) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd_)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise OSError(f"{name} is not a regular file")
        return handle.read()


def open_append_at(dir_fd_: int, name: str, mode: int = 0o600) -> int:
    """An append (and pread) descriptor on a regular file ``name`` (created with ``mode``), never through a symlink."""
    fd = os.open(name, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                 mode, dir_fd=dir_fd_)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise OSError(f"{name} is not a regular file with a single link")
    os.fchmod(fd, mode)
    return fd


def open_nofollow_at(dir_fd_: int, name: str) -> int:
    """A read descriptor on ``name`` itself (a symlink raises OSError ELOOP); for fchmod/fchown/setfacl."""
    return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd_)


def fd_path(fd: int) -> str:
    """A path naming the object behind ``fd`` for a child process given the descriptor (pass_fds)."""
    return f"/proc/self/fd/{fd}"


def copy_file_at(source: str, dir_fd_: int, name: str, *, replace: bool, owner: tuple[int, int] | None) -> None:
    """Copy regular file ``source`` (opened O_NOFOLLOW) to ``name`` in the directory: a new file is created
    with O_EXCL, a replacement goes through a temporary file and a rename. Mode (without group/other write),
    times and, when given, owner are set on the open descriptor."""
    src_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(src_fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{source} is not a regular file")
        if replace:
            out_fd, tmp = temp_file_at(dir_fd_, name)
        else:
            out_fd, tmp = create_exclusive(dir_fd_, name), None
        try:
            with os.fdopen(out_fd, "wb") as dst:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    dst.write(chunk)
                dst.flush()
                if owner is not None:
                    os.fchown(dst.fileno(), *owner)
                os.fchmod(dst.fileno(), stat.S_IMODE(st.st_mode) & ~0o022 & 0o1777)
                os.utime(dst.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
            if tmp is not None:
                os.rename(tmp, name, src_dir_fd=dir_fd_, dst_dir_fd=dir_fd_)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp or name, dir_fd=dir_fd_)
            raise


def symlink_at(target: str, dir_fd_: int, name: str, *, replace: bool, owner: tuple[int, int] | None) -> None:
    """Create symlink ``name`` -> ``target`` (a replacement goes through a temporary name and a rename)."""
    link_name = name
    if replace:
        for _attempt in range(100):
            link_name = _temp_name(name)
            try:
                os.symlink(target, link_name, dir_fd=dir_fd_)
                break
            except FileExistsError:
                continue
    else:
        os.symlink(target, name, dir_fd=dir_fd_)
    if owner is not None:
        with contextlib.suppress(OSError):
            os.chown(link_name, owner[0], owner[1], dir_fd=dir_fd_, follow_symlinks=False)
    if link_name != name:
        os.rename(link_name, name, src_dir_fd=dir_fd_, dst_dir_fd=dir_fd_)


def mkdir_at(dir_fd_: int, name: str, mode: int = 0o755) -> None:
    """Create directory ``name`` (fails if anything exists there) with exactly ``mode``."""
    os.mkdir(name, 0o700, dir_fd=dir_fd_)
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd_)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def remove_at(dir_fd_: int, name: str) -> bool:
    """Remove ``name``: a file or symlink is unlinked (a symlink itself, never its target), a directory
    only when empty. Returns True when something was removed."""
    st = lstat_at(dir_fd_, name)
    if st is None:
        return False
    try:
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=dir_fd_)
        else:
            os.unlink(name, dir_fd=dir_fd_)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if stat.S_ISDIR(st.st_mode) and exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False  # not empty: something not ours lives there
        if exc.errno == errno.ENOTDIR:  # swapped for a non-directory after the lstat: leave it
            return False
        raise
    return True


def rmtree_at(dir_fd_: int, name: str) -> None:
    """Remove the tree ``name`` below an open directory without following any symlink inside it."""
    st = lstat_at(dir_fd_, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd_)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd_)
    try:
        for entry in os.listdir(fd):
            rmtree_at(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd_)
