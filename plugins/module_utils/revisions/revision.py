# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revisions: bundle type, S3 fetch with ETag check and a local cache, safe unpacking, bundle root.

Runs on the controller (fetch, pack, read the appspec) and on hosts (safe_extract): stdlib only at
import time. S3 calls go through a boto3 client the caller passes in.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field, fields
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError

BUNDLE_TYPES = ("zip", "tar", "tgz")
BUNDLE_EXTENSIONS = {"zip": "zip", "tar": "tar", "tgz": "tar.gz"}  # a bundle type's file name ending
DEFAULT_CACHE_DIR = "~/.cache/rollwright/bundles"
DEFAULT_APPSPEC_NAMES = ("appspec.yml", "appspec.yaml")
PACK_MTIME = 315532800  # 1980-01-01T00:00:00Z: packed directories are byte-for-byte reproducible
_IGNORED_TOP_LEVEL = ("__MACOSX",)  # macOS Finder zips add it beside the real top-level directory
_CHUNK = 1024 * 1024
_KEPT_MODE_BITS = 0o755  # no setuid/setgid/sticky, no group/other write


class RevisionError(RollwrightError):
    """A revision that cannot be fetched, verified or read."""


class UnsafeArchiveError(RevisionError):
    """An archive member that would escape the destination or is not a plain file/dir/symlink."""

    def __init__(self, member: str, reason: str):
        self.member = member
        self.reason = reason
        super().__init__("unsafe archive member %r: %s" % (member, reason))


@dataclass
class FetchedBundle:
    path: str
    bundle_type: str
    etag: str | None = None
    version: str | None = None
    sha256: str | None = None
    size: int | None = None
    downloaded: bool = field(default=False, compare=False)  # bytes were transferred by this call

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("downloaded")
        return data


# --------------------------------------------------------------------------------------------
# Bundle type
# --------------------------------------------------------------------------------------------


def infer_bundle_type(key_or_path: str) -> str:
    """'zip', 'tar' or 'tgz' from a key or file name; RevisionError for anything else."""
    name = key_or_path.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".tar.gz") or name.endswith(".tgz"):
        return "tgz"
    if name.endswith(".tar"):
        return "tar"
    raise RevisionError(
        "cannot infer the bundle type of %r: expected a name ending in .zip, .tar, .tar.gz or .tgz "
        "(or give bundle_type: zip, tar or tgz)" % key_or_path
    )


def sniff_bundle_type(path: str) -> str | None:
    """The bundle type from the file's first bytes, or None."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tgz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def _resolve_type(path: str, bundle_type: str | None) -> str:
    if bundle_type:
        if bundle_type not in BUNDLE_TYPES:
            raise RevisionError("bundle_type: expected one of zip, tar, tgz, got %r" % bundle_type)
        return bundle_type
    try:
        return infer_bundle_type(path)
    except RevisionError:
        sniffed = sniff_bundle_type(path) if os.path.isfile(path) else None
        if sniffed:
            return sniffed
        raise


def _appspec_names(appspec_name: str) -> tuple[str, ...]:
    if appspec_name in DEFAULT_APPSPEC_NAMES:
        return (appspec_name,) + tuple(n for n in DEFAULT_APPSPEC_NAMES if n != appspec_name)
    return (appspec_name,)


# --------------------------------------------------------------------------------------------
# Reading archives as a uniform member list
# --------------------------------------------------------------------------------------------


@dataclass
class _Member:
    name: str  # normalised, relative, '/'-separated, no trailing '/'
    kind: str  # 'file', 'dir', 'symlink', 'hardlink'
    mode: int
    mtime: float
    linkname: str = ""
    ref: object = None  # TarInfo or ZipInfo


def _clean_name(raw: str) -> str:
    """Validate and normalise an archive member name; raises UnsafeArchiveError."""
    name = raw
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(raw, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(raw, "path contains '..'")
    return "/".join(parts)


def _tar_members(tf: tarfile.TarFile) -> list[_Member]:
    out = []
    for ti in tf.getmembers():
        name = _clean_name(ti.name)
        if ti.isdir():
            kind = "dir"
        elif ti.issym():
            kind = "symlink"
        elif ti.islnk():
            kind = "hardlink"
        elif ti.isreg():
            kind = "file"
        elif ti.ischr() or ti.isblk():
            raise UnsafeArchiveError(ti.name, "device file")
        elif ti.isfifo():
            raise UnsafeArchiveError(ti.name, "FIFO (named pipe)")
        else:
            raise UnsafeArchiveError(ti.name, "unsupported member type %r" % ti.type)
        if not name and kind != "dir":
            raise UnsafeArchiveError(ti.name, "empty name")
        out.append(_Member(name, kind, ti.mode, ti.mtime, ti.linkname, ti))
    return out


def _zip_members(zf: zipfile.ZipFile) -> list[_Member]:
    out = []
    for zi in zf.infolist():
        raw = zi.filename
        if zi.create_system == 0:  # made on Windows: backslashes are separators
            raw = raw.replace("\\", "/")
        name = _clean_name(raw)
        unix_mode = zi.external_attr >> 16
        ftype = stat.S_IFMT(unix_mode)
        mtime = _zip_mtime(zi)
        if zi.is_dir() or ftype == stat.S_IFDIR:
            out.append(_Member(name, "dir", stat.S_IMODE(unix_mode) or 0o755, mtime, "", zi))
        elif ftype == stat.S_IFLNK:
            target = zf.read(zi).decode("utf-8", "surrogateescape")
            out.append(_Member(name, "symlink", 0o777, mtime, target, zi))
        elif ftype in (stat.S_IFCHR, stat.S_IFBLK):
            raise UnsafeArchiveError(zi.filename, "device file")
        elif ftype == stat.S_IFIFO:
            raise UnsafeArchiveError(zi.filename, "FIFO (named pipe)")
        elif ftype in (0, stat.S_IFREG):
            if not name:
                raise UnsafeArchiveError(zi.filename, "empty name")
            out.append(_Member(name, "file", stat.S_IMODE(unix_mode) or 0o644, mtime, "", zi))
        else:
            raise UnsafeArchiveError(zi.filename, "unsupported member type (mode %o)" % unix_mode)
    return out


def _zip_mtime(zi: zipfile.ZipInfo) -> float:
    import time

    try:
        return time.mktime(zi.date_time + (0, 0, -1))
    except (OverflowError, ValueError):
        return 0.0


class _Archive:
    """An open zip or tar with its validated member list."""

    def __init__(self, path: str, bundle_type: str | None):
        self.path = path
        self.bundle_type = _resolve_type(path, bundle_type)
        try:
            if self.bundle_type == "zip":
                self.handle = zipfile.ZipFile(path)
                self.members = _zip_members(self.handle)
            else:
                self.handle = tarfile.open(path, "r:gz" if self.bundle_type == "tgz" else "r:")
                self.members = _tar_members(self.handle)
        except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as exc:
            raise RevisionError("%s is not a readable %s bundle: %s" % (path, self.bundle_type, exc)) from None

    def close(self) -> None:
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def open_member(self, m: _Member):
        if self.bundle_type == "zip":
            return self.handle.open(m.ref)
        fh = self.handle.extractfile(m.ref)
        if fh is None:
            raise RevisionError("cannot read archive member %r" % m.name)
        return fh


def _virtual_resolve(path: str, links: dict[str, str], limit: int = 64) -> str | None:
    """Resolve an archive-relative path through the archive's own symlinks.

    Returns the resolved relative path, or None when it leaves the archive root (or loops).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        p = parts.pop(0)
        if p == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        candidate = "/".join(resolved + [p])
        if candidate in links:
            hops += 1
            target = links[candidate]
            if hops > limit or target.startswith("/"):
                return None
            parts = [x for x in target.split("/") if x not in ("", ".")] + parts
            continue
        resolved.append(p)
    return "/".join(resolved)


def _check_members(members: list[_Member]) -> None:
    """Reject links that leave the archive and members written through a symlinked directory."""
    links = {m.name: m.linkname for m in members if m.kind == "symlink"}
    kinds: dict[str, str] = {}
    for m in members:
        # a member below an earlier symlink would be written through that link
        parts = m.name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in links:
                raise UnsafeArchiveError(m.name, "its parent %r is a symlink in the archive" % prefix)
        if m.kind == "symlink":
            if not m.linkname:
                raise UnsafeArchiveError(m.name, "symlink with an empty target")
            if m.linkname.startswith("/"):
                raise UnsafeArchiveError(m.name, "symlink to absolute path %r points outside the archive" % m.linkname)
            parent = posixpath.dirname(m.name)
            if _virtual_resolve(posixpath.join(parent, m.linkname), links) is None:
                raise UnsafeArchiveError(m.name, "symlink to %r points outside the archive" % m.linkname)
        elif m.kind == "hardlink":
            target = m.linkname
            if target.startswith("/") or ".." in target.split("/"):
                raise UnsafeArchiveError(m.name, "hard link to %r points outside the archive" % target)
            target = _clean_name(target)
            if kinds.get(target) != "file":
                raise UnsafeArchiveError(m.name, "hard link to %r, which is not an earlier regular file of the archive" % target)
        previous = kinds.get(m.name)
        if previous is not None and (previous != m.kind or m.kind == "symlink"):
            raise UnsafeArchiveError(m.name, "appears twice with different types (%s, then %s)" % (previous, m.kind))
        kinds[m.name] = "file" if m.kind == "hardlink" else m.kind


def _bundle_root_name(names: list[str], is_dir, has_appspec) -> str:
    """'' when the appspec is at the top, else the single top-level directory holding it."""
    tops = sorted({n.split("/", 1)[0] for n in names if n} - set(_IGNORED_TOP_LEVEL))
    if len(tops) == 1 and is_dir(tops[0]) and not has_appspec("") and has_appspec(tops[0]):
        return tops[0]
    return ""


# --------------------------------------------------------------------------------------------
# Safe extraction (hosts)
# --------------------------------------------------------------------------------------------


@dataclass
class UnpackLimits:
    """Bounds on what a bundle may unpack to; each is an option of host_lifecycle (``unpack_limits``).

    The defaults fit a large real application (a JVM or Node app with its dependencies) with room to spare.
    ``ratio`` compares the total unpacked size with the archive's size.
    """

    total_bytes: int = 4 * 1024 ** 3
    member_bytes: int = 2 * 1024 ** 3
    members: int = 200_000
    ratio: int = 200
    symlink_target: int = 1024

    OPTION = "unpack_limits"

    @classmethod
    def from_options(cls, options: dict | None) -> "UnpackLimits":
        limits = cls()
        names = [f.name for f in fields(cls)]
        for key, value in (options or {}).items():
            if value is None:
                continue
            if key not in names:
                raise RevisionError("unpack_limits: unknown limit %r; limits: %s" % (key, ", ".join(names)))
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RevisionError("unpack_limits.%s must be an integer >= 1, got %r" % (key, value))
            setattr(limits, key, value)
        return limits


class UnpackLimitError(RevisionError):
    """A bundle exceeds an unpack limit; the message names the limit (its option name)."""

    def __init__(self, limit: str, detail: str):
        self.limit = limit
        super().__init__("unpack limit %s.%s exceeded: %s" % (UnpackLimits.OPTION, limit, detail))


def _member_size(arc: "_Archive", m: _Member) -> int:
    if m.kind != "file":
        return 0
    return int(m.ref.file_size if arc.bundle_type == "zip" else m.ref.size)


def check_unpack_limits(arc: "_Archive", limits: UnpackLimits, dest_dir: str) -> int:
    """Check the member list against ``limits`` and the free space of ``dest_dir`` before anything is written;
    returns the total unpacked size. Sizes come from the archive's headers; extraction never writes more
    than a member's header says (zipfile and tarfile stop there)."""
    if len(arc.members) > limits.members:
        raise UnpackLimitError("members", "the bundle has %d members, more than %d" % (len(arc.members), limits.members))
    total = 0
    for m in arc.members:
        if m.kind == "symlink" and len(m.linkname.encode("utf-8", "surrogateescape")) > limits.symlink_target:
            raise UnpackLimitError("symlink_target", "symlink %r has a target of %d bytes, more than %d"
                                   % (m.name, len(m.linkname.encode("utf-8", "surrogateescape")), limits.symlink_target))
        size = _member_size(arc, m)
        if size > limits.member_bytes:
            raise UnpackLimitError("member_bytes", "member %r unpacks to %d bytes, more than %d" % (m.name, size, limits.member_bytes))
        total += size
    if total > limits.total_bytes:
        raise UnpackLimitError("total_bytes", "the bundle unpacks to %d bytes, more than %d" % (total, limits.total_bytes))
    packed = max(1, os.path.getsize(arc.path))
    if total > packed * limits.ratio:
        raise UnpackLimitError("ratio", "the bundle unpacks to %d bytes from %d (%d:1), more than %d:1"
                               % (total, packed, total // packed, limits.ratio))
    st = os.statvfs(dest_dir)
    free = st.f_bavail * st.f_frsize
    if total > free:
        raise RevisionError("not enough free space to unpack the bundle: it needs %d bytes, %s has %d free"
                            % (total, dest_dir, free))
    return total


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real + os.sep)


def safe_extract(archive_path: str, dest_dir: str, bundle_type: str | None = None, appspec_name: str = "appspec.yml",
                 limits: UnpackLimits | None = None) -> str:
    """Unpack a zip/tar/tgz bundle into dest_dir safely and return the bundle root.

    Rejects (UnsafeArchiveError naming the member, before writing anything) absolute names, '..',
    symlinks or hard links leading outside the archive, members below a symlinked directory, device
    files and FIFOs, and bundles over ``limits`` (UnpackLimitError naming the limit) or larger than the free
    space. Keeps permission bits (setuid/setgid/sticky and group/other write are dropped: nobody but the
    owner may change what may later run as root), symlinks and mtimes;
    ownership is not restored (the appspec's permissions section sets it). The root is dest_dir, or
    the archive's only top-level directory when that directory holds the appspec (agent rule).
    """
    names = _appspec_names(appspec_name)
    os.makedirs(dest_dir, exist_ok=True)
    root_real = os.path.realpath(dest_dir)
    with _Archive(archive_path, bundle_type) as arc:
        _check_members(arc.members)
        check_unpack_limits(arc, limits or UnpackLimits(), dest_dir)
        dirs: list[_Member] = []
        created: dict[str, str] = {}
        for m in arc.members:
            target = os.path.join(dest_dir, *m.name.split("/")) if m.name else dest_dir
            parent = os.path.dirname(target)
            if m.kind == "dir":
                if not m.name:
                    continue  # the archive's "./" entry: leave dest_dir's own mode alone
                os.makedirs(target, mode=0o700, exist_ok=True)
                if not _inside(root_real, target):
                    raise UnsafeArchiveError(m.name, "directory resolves outside the destination")
                dirs.append(m)
                continue
            os.makedirs(parent, mode=0o755, exist_ok=True)
            if not _inside(root_real, parent):
                raise UnsafeArchiveError(m.name, "parent directory resolves outside the destination")
            if os.path.lexists(target):
                if os.path.isdir(target) and not os.path.islink(target):
                    raise UnsafeArchiveError(m.name, "a directory of the same name already exists")
                os.unlink(target)
            if m.kind == "symlink":
                os.symlink(m.linkname, target)
            elif m.kind == "hardlink":
                source = created[_clean_name(m.linkname)]
                shutil.copy2(source, target)
            else:
                with arc.open_member(m) as src, open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                os.chmod(target, m.mode & _KEPT_MODE_BITS)
                os.utime(target, (m.mtime, m.mtime))
            created[m.name] = target
        # directories last, deepest first: a read-only directory must not block its children
        for m in sorted(dirs, key=lambda d: d.name.count("/"), reverse=True):
            target = os.path.join(dest_dir, *m.name.split("/"))
            mode = m.mode & _KEPT_MODE_BITS
            os.chmod(target, mode | 0o700 if os.geteuid() != 0 else mode)
            os.utime(target, (m.mtime, m.mtime))
        member_names = [m.name for m in arc.members]

    def has_appspec(rel: str) -> bool:
        return any(os.path.isfile(os.path.join(dest_dir, rel, n)) for n in names)

    top = _bundle_root_name(
        member_names, lambda t: os.path.isdir(os.path.join(dest_dir, t)) and not os.path.islink(os.path.join(dest_dir, t)), has_appspec
    )
    return os.path.join(dest_dir, top) if top else dest_dir


# --------------------------------------------------------------------------------------------
# Reading a bundle without extracting it (controller)
# --------------------------------------------------------------------------------------------


def bundle_entries(archive_or_dir: str, bundle_type: str | None = None, appspec_name: str = "appspec.yml") -> tuple[str, dict[str, str]]:
    """(root prefix, {path relative to the bundle root: 'file'|'dir'|'link'}) of an archive or directory."""
    names = _appspec_names(appspec_name)
    if os.path.isdir(archive_or_dir):
        base = archive_or_dir
        top = _bundle_root_name(
            os.listdir(base),
            lambda t: os.path.isdir(os.path.join(base, t)) and not os.path.islink(os.path.join(base, t)),
            lambda rel: any(os.path.isfile(os.path.join(base, rel, n)) for n in names),
        )
        root = os.path.join(base, top) if top else base
        entries: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
            for d in dirnames:
                p = os.path.join(dirpath, d)
                entries[posixpath.join(rel_dir, d)] = "link" if os.path.islink(p) else "dir"
            for f in filenames:
                p = os.path.join(dirpath, f)
                entries[posixpath.join(rel_dir, f)] = "link" if os.path.islink(p) else "file"
        return top, entries
    with _Archive(archive_or_dir, bundle_type) as arc:
        members = arc.members
    all_entries: dict[str, str] = {}
    for m in members:
        if not m.name:
            continue
        kind = {"symlink": "link", "hardlink": "file"}.get(m.kind, m.kind)
        all_entries[m.name] = kind
        parts = m.name.split("/")
        for i in range(1, len(parts)):
            all_entries.setdefault("/".join(parts[:i]), "dir")
    top = _bundle_root_name(
        list(all_entries),
        lambda t: all_entries.get(t) == "dir",
        lambda rel: any(all_entries.get(posixpath.join(rel, n) if rel else n) == "file" for n in names),
    )
    if not top:
        return "", all_entries
    prefix = top + "/"
    return top, {k[len(prefix):]: v for k, v in all_entries.items() if k.startswith(prefix)}


def read_appspec_text(archive_or_dir: str, bundle_type: str | None = None, appspec_name: str = "appspec.yml") -> tuple[str, str]:
    """(appspec text, its path inside the bundle) without extracting the bundle; RevisionError if missing."""
    names = _appspec_names(appspec_name)

    def _decode(data: bytes, where: str) -> str:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise RevisionError("%s is not UTF-8 text: %s" % (where, exc)) from None

    if os.path.isdir(archive_or_dir):
        top, _entries = bundle_entries(archive_or_dir, None, appspec_name)
        for n in names:
            rel = posixpath.join(top, n) if top else n
            p = os.path.join(archive_or_dir, rel)
            if os.path.isfile(p):
                with open(p, "rb") as fh:
                    return _decode(fh.read(), p), rel
        raise RevisionError(
            "no %s in directory %s (looked at the top and in a single top-level directory)" % (" or ".join(names), archive_or_dir)
        )
    with _Archive(archive_or_dir, bundle_type) as arc:
        by_name = {m.name: m for m in arc.members}
        all_names = set(by_name)
        for m in arc.members:
            parts = m.name.split("/")
            for i in range(1, len(parts)):
                all_names.add("/".join(parts[:i]))
        dir_names = {n for n in all_names if n not in by_name or by_name[n].kind == "dir"}

        def is_file(rel: str) -> bool:
            m = by_name.get(rel)
            return m is not None and m.kind == "file"

        top = _bundle_root_name(
            sorted(all_names), lambda t: t in dir_names, lambda rel: any(is_file(posixpath.join(rel, n) if rel else n) for n in names)
        )
        for n in names:
            rel = posixpath.join(top, n) if top else n
            if is_file(rel):
                with arc.open_member(by_name[rel]) as fh:
                    return _decode(fh.read(), "%s:%s" % (archive_or_dir, rel)), rel
    raise RevisionError(
        "no %s in bundle %s (looked at the top and in a single top-level directory)" % (" or ".join(names), archive_or_dir)
    )


# --------------------------------------------------------------------------------------------
# Fetching from S3 (controller; client passed in)
# --------------------------------------------------------------------------------------------


def normalise_etag(etag: str | None) -> str | None:
    if etag is None:
        return None
    etag = str(etag).strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"') or None


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
    return None


def _s3_error(exc: Exception, bucket: str, key: str, version: str | None) -> RevisionError:
    code = _error_code(exc)
    where = "s3://%s/%s" % (bucket, key)
    if code is None:
        return RevisionError("fetching %s failed: %s" % (where, exc))
    if code == "NoSuchBucket":
        return RevisionError("s3.bucket: bucket %r does not exist" % bucket)
    if version and code in ("NoSuchVersion", "InvalidArgument", "400", "404", "NoSuchKey", "NotFound"):
        return RevisionError("s3.version: version %r of %s not found (%s)" % (version, where, code))
    if code in ("NoSuchKey", "404", "NotFound"):
        return RevisionError("s3.key: object %s not found" % where)
    if code in ("403", "AccessDenied"):
        return RevisionError("access denied reading %s (check the controller's credentials and s3:GetObject%s)"
                             % (where, "Version" if version else ""))
    return RevisionError("fetching %s failed (%s): %s" % (where, code, exc))


def _etag_mismatch(bucket: str, key: str, expected: str, actual: str | None, version: str | None) -> RevisionError:
    return RevisionError(
        "s3.etag: ETag mismatch for s3://%s/%s%s: expected %s, the object has %s"
        % (bucket, key, " version %s" % version if version else "", expected, actual)
    )


def _clean_version(version) -> str | None:
    if version in (None, "", "null"):
        return None
    return str(version)


def _cache_name(bucket: str, key: str, version: str | None, etag: str | None, bundle_type: str) -> str:
    ident = json.dumps(["s3", bucket, key, version, etag])
    ext = BUNDLE_EXTENSIONS[bundle_type]
    return "s3-%s.%s" % (hashlib.sha256(ident.encode()).hexdigest()[:32], ext)


def _sha256_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _write_json_atomic(path: str, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".partial-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, sort_keys=True)
    os.replace(tmp, path)


def s3_head(s3_client, bucket: str, key: str, version: str | None = None) -> dict:
    """HeadObject as {etag, version, size, last_modified}; RevisionError naming the field on failure."""
    kwargs = {"Bucket": bucket, "Key": key}
    if version:
        kwargs["VersionId"] = version
    try:
        head = s3_client.head_object(**kwargs)
    except Exception as exc:  # botocore ClientError; botocore is not imported here
        raise _s3_error(exc, bucket, key, version) from None
    lm = head.get("LastModified")
    return {
        "etag": normalise_etag(head.get("ETag")),
        "version": _clean_version(head.get("VersionId")),
        "size": head.get("ContentLength"),
        "last_modified": lm.isoformat() if hasattr(lm, "isoformat") else lm,
    }


def s3_cache_path(dest_dir: str, bucket: str, key: str, version: str | None, etag: str | None, bundle_type: str) -> str:
    """Where fetch_s3_bundle keeps the object of this identity."""
    return os.path.join(os.path.expanduser(dest_dir), _cache_name(bucket, key, _clean_version(version), normalise_etag(etag), bundle_type))


def cached_s3_bundle(dest_dir: str, bucket: str, key: str, version: str | None, etag: str | None, bundle_type: str) -> FetchedBundle | None:
    """The cached copy for this object identity when present and intact, else None."""
    path = s3_cache_path(dest_dir, bucket, key, version, etag, bundle_type)
    meta_path = path + ".json"
    if not (os.path.isfile(path) and os.path.isfile(meta_path)):
        return None
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
        sha, size = _sha256_file(path)
    except (OSError, ValueError):
        return None
    if meta.get("sha256") != sha or meta.get("size") != size:
        return None
    return FetchedBundle(path, bundle_type, meta.get("etag"), meta.get("version"), sha, size)


def fetch_s3_bundle(
    s3_client,
    bucket: str,
    key: str,
    dest_dir: str,
    version: str | None = None,
    etag: str | None = None,
    bundle_type: str | None = None,
) -> FetchedBundle:
    """Download s3://bucket/key (by VersionId when given) into dest_dir, verify its ETag, cache it.

    The file name is derived from (bucket, key, version, etag); a later fetch of the same identity
    reuses it. With neither version nor etag given, one HeadObject pins the current identity first
    and the download must match it. Nothing partial is ever left under the final name.
    ``fetched.downloaded`` tells whether bytes were transferred.
    """
    bundle_type = bundle_type or infer_bundle_type(key)
    if bundle_type not in BUNDLE_TYPES:
        raise RevisionError("bundle_type: expected one of zip, tar, tgz, got %r" % bundle_type)
    dest_dir = os.path.expanduser(dest_dir)
    os.makedirs(dest_dir, exist_ok=True)
    version = _clean_version(version)
    expected = normalise_etag(etag)
    if version is None and expected is None:
        head = s3_head(s3_client, bucket, key)
        version, pinned = head["version"], head["etag"]
    else:
        pinned = expected
    cached = cached_s3_bundle(dest_dir, bucket, key, version, pinned, bundle_type)
    if cached is not None:
        return cached

    kwargs = {"Bucket": bucket, "Key": key}
    if version:
        kwargs["VersionId"] = version
    try:
        response = s3_client.get_object(**kwargs)
    except Exception as exc:
        raise _s3_error(exc, bucket, key, version) from None
    actual = normalise_etag(response.get("ETag"))
    if pinned is not None and actual != pinned:
        response["Body"].close()
        if expected is None:
            raise RevisionError("s3://%s/%s changed while being fetched (ETag %s, then %s); retry" % (bucket, key, pinned, actual))
        raise _etag_mismatch(bucket, key, pinned, actual, version)
    got_version = _clean_version(response.get("VersionId")) or version

    final = os.path.join(dest_dir, _cache_name(bucket, key, version, pinned, bundle_type))
    fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".partial-")
    h = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            body = response["Body"]
            for chunk in iter(lambda: body.read(_CHUNK), b""):
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
        expected_len = response.get("ContentLength")
        if expected_len is not None and expected_len != size:
            raise RevisionError("s3://%s/%s: download truncated (%d of %d bytes)" % (bucket, key, size, expected_len))
        os.replace(tmp, final)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fetched = FetchedBundle(final, bundle_type, actual, got_version, h.hexdigest(), size, downloaded=True)
    _write_json_atomic(final + ".json", {**fetched.to_dict(), "bucket": bucket, "key": key})
    return fetched


# --------------------------------------------------------------------------------------------
# Local bundles (controller)
# --------------------------------------------------------------------------------------------


def _pack_directory(src: str, out_fh) -> None:
    """Write a reproducible tar.gz of src: sorted entries, fixed mtimes and owners, gzip mtime 0."""
    src = os.path.abspath(src)
    src_real = os.path.realpath(src)
    with gzip.GzipFile(filename="", mode="wb", fileobj=out_fh, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for dirpath, dirnames, filenames in os.walk(src):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, src)
                entries = sorted(dirnames + filenames)
                for name in entries:
                    full = os.path.join(dirpath, name)
                    rel = name if rel_dir == "." else posixpath.join(rel_dir.replace(os.sep, "/"), name)
                    st = os.lstat(full)
                    ti = tarfile.TarInfo(rel)
                    ti.mtime = PACK_MTIME
                    ti.uid = ti.gid = 0
                    ti.uname = ti.gname = ""
                    ti.mode = stat.S_IMODE(st.st_mode)
                    if stat.S_ISLNK(st.st_mode):
                        ti.type = tarfile.SYMTYPE
                        ti.linkname = os.readlink(full)
                        real = os.path.realpath(full)
                        if ti.linkname.startswith("/") or not (real == src_real or real.startswith(src_real + os.sep)):
                            raise RevisionError("%s: symlink to %r points outside the bundle directory" % (full, ti.linkname))
                        tf.addfile(ti)
                    elif stat.S_ISDIR(st.st_mode):
                        ti.type = tarfile.DIRTYPE
                        tf.addfile(ti)
                    elif stat.S_ISREG(st.st_mode):
                        ti.size = st.st_size
                        with open(full, "rb") as fh:
                            tf.addfile(ti, fh)
                    else:
                        raise RevisionError("%s: only files, directories and symlinks can be bundled" % full)


def local_bundle(path: str, cache_dir: str = DEFAULT_CACHE_DIR, bundle_type: str | None = None, check_mode: bool = False) -> FetchedBundle:
    """A local bundle file as is, or a directory packed into a reproducible tar.gz in cache_dir.

    For a directory in check mode nothing is written and path/sha256/size are None.
    """
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        if check_mode:
            return FetchedBundle(None, "tgz")  # type: ignore[arg-type]
        cache_dir = os.path.expanduser(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as fh:
                _pack_directory(path, fh)
            sha, size = _sha256_file(tmp)
            final = os.path.join(cache_dir, "local-%s.tar.gz" % sha[:32])
            if os.path.exists(final):
                os.unlink(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return FetchedBundle(final, "tgz", None, None, sha, size)
    if not os.path.isfile(path):
        raise RevisionError("path: %s is neither a bundle file nor a directory" % path)
    btype = _resolve_type(path, bundle_type)
    sha, size = _sha256_file(path)
    return FetchedBundle(os.path.abspath(path), btype, None, None, sha, size)


def pack_directory_bytes(path: str) -> bytes:
    """The reproducible tar.gz of a directory, in memory (small bundles, tests)."""
    buf = io.BytesIO()
    _pack_directory(path, buf)
    return buf.getvalue()
