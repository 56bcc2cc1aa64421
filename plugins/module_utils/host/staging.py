# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pre-staged revisions on a host: the tree digest of a staged copy and the download of a presigned URL.

Runs on the hosts: stdlib and ansible.module_utils only.

Staging unpacks a deployment's revision into its sealed deployment directory (``archive/``) while the host is still
in service; the batch that deploys the host later installs from that copy. What was unpacked is fingerprinted
when staged (``tree_digest``: every entry's path, type, mode, owner, and the content of files or the target of
links, read without following any symlink) and fingerprinted again before it is used: a copy that changed in
between is refused, never installed.

A small pushed bundle travels inside the module's arguments (``INLINE_BUNDLE_MAX``, ``receive``): no temporary
directory, file transfer and clean-up on the host, three SSH round trips less per host.

A presigned URL is a secret (whoever holds it may read the object until it expires): it is never part of an
error message or a result (``scrub``), and it is only ever read from the module's arguments.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import urllib.error
import urllib.parse

from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

STAGED = "Staged"  # status.json of a deployment whose revision is staged and not yet used by a batch
DOWNLOAD_NAME = "download.part"
DOWNLOAD_TIMEOUT = 60.0
_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class StagingError(RollwrightError):
    """The revision cannot be staged or the staged copy cannot be used; the message says why (never the URL)."""


def tree_digest(top_fd: int) -> str:
    """SHA-256 over everything below the open directory ``top_fd``: per entry (sorted) its relative path, type,
    permission bits, owner and group, a file's content and a link's target. Symlinks are read, never followed."""
    digest = hashlib.sha256()
    _digest_dir(top_fd, "", digest)
    return digest.hexdigest()


def _digest_dir(dfd: int, rel: str, digest) -> None:
    for name in sorted(os.listdir(dfd)):
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        path = f"{rel}/{name}"
        digest.update(f"{path}\0{stat.S_IFMT(st.st_mode):o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_uid}\0{st.st_gid}\0"
                      .encode("utf-8", "surrogateescape"))
        if stat.S_ISLNK(st.st_mode):
            digest.update(os.readlink(name, dir_fd=dfd).encode("utf-8", "surrogateescape"))
        elif stat.S_ISREG(st.st_mode):
            fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
            with os.fdopen(fd, "rb") as handle:
                if os.fstat(handle.fileno()).st_ino != st.st_ino:  # swapped between the stat and the open
                    raise StagingError(f"{path.lstrip('/')} changed while it was read")
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
        elif stat.S_ISDIR(st.st_mode):
            child = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                _digest_dir(child, path, digest)
            finally:
                os.close(child)
        digest.update(b"\n")


def scrub(text: str, url: str | None) -> str:
    """``text`` without the URL or its signed query (an exception's text may quote either)."""
    if not url:
        return text
    query = urllib.parse.urlsplit(url).query
    for secret in (url, query):
        if secret:
            text = text.replace(secret, "<presigned URL>")
    return text


# A pushed bundle up to this size is carried in the module's arguments (base64) instead of a file transfer: the
# payload of one pipelined module run stays small, and the host is spared a temporary directory, an sftp session
# and their clean-up. Larger bundles are copied as files.
INLINE_BUNDLE_MAX = 1024 * 1024


def receive(content: str, dir_fd: int, name: str, limit: int) -> str:
    """Write a bundle carried in the module's arguments (base64) into ``name`` below ``dir_fd`` (0600, atomically)
    and return the SHA-256 of the bytes written."""
    from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs

    if len(content) > 4 * ((limit + 2) // 3):
        raise StagingError(f"the bundle sent with the call is larger than unpack_limits.total_bytes ({limit} bytes)")
    try:
        data = base64.b64decode(content, validate=True)
    except (ValueError, TypeError):
        raise StagingError("bundle_content: expected the bundle's bytes in base64") from None
    _fs.write_bytes_at(dir_fd, name, data)
    return hashlib.sha256(data).hexdigest()


class _Bounded:
    """A response stream that fails once more than ``limit`` bytes came."""

    def __init__(self, stream, limit: int):
        self.stream, self.limit, self.seen = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.seen += len(chunk)
        if self.seen > self.limit:
            raise StagingError(f"the download is larger than unpack_limits.total_bytes ({self.limit} bytes)")
        return chunk


def download(url: str, dir_fd: int, name: str, limit: int, what: str, timeout: float = DOWNLOAD_TIMEOUT) -> str:
    """Fetch ``url`` (http or https) into ``name`` below ``dir_fd`` (0600, atomically) and return the SHA-256 of
    the bytes written. ``what`` names the object in errors (bucket, key, version), never the URL."""
    # Imported here, not above: every host engine run loads this module, and only a download needs
    # Ansible's URL helpers (about 60 ms of a 450 ms run on a host).
    from ansible.module_utils.urls import open_url
    from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs as _fs

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise StagingError(f"the presigned URL for {what} must be http or https")
    try:
        with open_url(url, method="GET", timeout=timeout, validate_certs=True) as response:
            return _fs.write_stream_at(dir_fd, name, _Bounded(response, limit))
    except urllib.error.HTTPError as exc:
        raise StagingError(f"downloading {what}: HTTP {exc.code} {scrub(str(exc.reason), url)}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise StagingError(f"downloading {what}: {scrub(str(reason), url)}") from None
