# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Revision bundles: type inference, safe unpacking, bundle root, appspec reading, local packing."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import zipfile

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.revision import (
    FetchedBundle,
    RevisionError,
    UnsafeArchiveError,
    bundle_entries,
    fetch_s3_bundle,
    infer_bundle_type,
    local_bundle,
    read_appspec_text,
    safe_extract,
    sniff_bundle_type,
)

APPSPEC = b"version: 0.0\nos: linux\n"


# ---------------------------------------------------------------------------------------------
# archive builders: entries are (name, kind, payload, mode) with kind file|dir|symlink|hardlink|chr|fifo
# ---------------------------------------------------------------------------------------------


def make_tar(path, entries, gz=False):
    with tarfile.open(path, "w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, payload, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            ti.mtime = 1_600_000_000
            if kind == "file":
                ti.size = len(payload)
                tf.addfile(ti, io.BytesIO(payload))
                continue
            ti.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                       "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE, "blk": tarfile.BLKTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                ti.linkname = payload
            tf.addfile(ti)
    return str(path)


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, kind, payload, mode in entries:
            zi = zipfile.ZipInfo(name, date_time=(2020, 9, 13, 12, 26, 40))
            zi.create_system = 3
            ftype = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "chr": stat.S_IFCHR,
                     "fifo": stat.S_IFIFO}[kind]
            zi.external_attr = (ftype | mode) << 16
            if kind == "dir":
                zi.external_attr |= 0x10
            data = payload.encode() if isinstance(payload, str) else payload
            zf.writestr(zi, data if kind != "dir" else b"")
    return str(path)


def F(name, data=b"x", mode=0o644):
    return (name, "file", data, mode)


def D(name, mode=0o755):
    return (name, "dir", None, mode)


def L(name, target):
    return (name, "symlink", target, 0o777)


# ---------------------------------------------------------------------------------------------
# bundle type
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", [
    ("app.zip", "zip"), ("APP.ZIP", "zip"), ("releases/app-1.2.tar", "tar"), ("app.tar.gz", "tgz"),
    ("a/b/app.tgz", "tgz"), ("app.TGZ", "tgz"),
])
def test_infer_bundle_type(name, expected):
    assert infer_bundle_type(name) == expected


@pytest.mark.parametrize("name", ["app.gz", "app.rar", "app", "app.tar.bz2", "app.zipx"])
def test_infer_bundle_type_rejects(name):
    with pytest.raises(RevisionError, match="cannot infer the bundle type of %r: expected a name ending in .zip, .tar, .tar.gz or .tgz" % name):
        infer_bundle_type(name)


def test_sniff_bundle_type(tmp_path):
    assert sniff_bundle_type(make_zip(tmp_path / "a.bin", [F("appspec.yml", APPSPEC)])) == "zip"
    assert sniff_bundle_type(make_tar(tmp_path / "b.bin", [F("appspec.yml", APPSPEC)])) == "tar"
    assert sniff_bundle_type(make_tar(tmp_path / "c.bin", [F("appspec.yml", APPSPEC)], gz=True)) == "tgz"
    (tmp_path / "d.bin").write_bytes(b"hello")
    assert sniff_bundle_type(str(tmp_path / "d.bin")) is None
    # safe_extract falls back to sniffing when the name says nothing (hosts get bundle.<anything>)
    root = safe_extract(str(tmp_path / "c.bin"), str(tmp_path / "out"))
    assert open(os.path.join(root, "appspec.yml"), "rb").read() == APPSPEC


# ---------------------------------------------------------------------------------------------
# unsafe archives: rejected with the member named, nothing written
# ---------------------------------------------------------------------------------------------

UNSAFE = [
    ("zip-slip", [F("appspec.yml", APPSPEC), F("../evil.sh")], "'../evil.sh'", "path contains '..'"),
    ("nested zip-slip", [F("a/../../evil.sh")], "'a/../../evil.sh'", "'..'"),
    ("absolute member", [F("/tmp/rw-evil")], "'/tmp/rw-evil'", "absolute path"),
    ("absolute symlink", [L("etc", "/etc")], "'etc'", "symlink to absolute path '/etc' points outside the archive"),
    ("relative symlink escape", [D("a"), L("a/up", "../../outside")], "'a/up'", "symlink to '../../outside' points outside"),
    ("symlink chain escape", [L("here", "."), L("esc", "here/../x")], "'esc'", "points outside the archive"),
    ("write through symlinked dir", [D("real"), L("d", "real"), F("d/f")], "'d/f'", "its parent 'd' is a symlink"),
    ("symlink then file of same name", [L("x", "y"), F("x")], "'x'", "appears twice"),
]


@pytest.mark.parametrize("fmt", ["tar", "tgz", "zip"])
@pytest.mark.parametrize("name,entries,member,reason", UNSAFE, ids=[u[0] for u in UNSAFE])
def test_unsafe_members_rejected(tmp_path, fmt, name, entries, member, reason):
    if fmt == "zip" and name == "absolute member":
        entries = [F("/tmp/rw-evil")]
    archive = make_zip(tmp_path / "b.zip", entries) if fmt == "zip" else make_tar(tmp_path / ("b." + fmt), entries, gz=fmt == "tgz")
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError) as exc:
        safe_extract(archive, str(out))
    assert member in str(exc.value) and reason in str(exc.value)
    assert exc.value.member == member.strip("'")
    assert os.listdir(out) == []  # validated before anything was written
    assert not os.path.exists("/tmp/rw-evil") and not (tmp_path / "evil.sh").exists()


def test_zip_writes_plain_slash_names_but_we_still_reject_windows_absolute(tmp_path):
    archive = make_zip(tmp_path / "w.zip", [F("C:/Windows/evil")])
    with pytest.raises(UnsafeArchiveError, match="absolute path"):
        safe_extract(archive, str(tmp_path / "out"))


@pytest.mark.parametrize("target", ["../../etc/passwd", "/etc/passwd"])
def test_tar_hardlink_escape_rejected(tmp_path, target):
    archive = make_tar(tmp_path / "h.tar", [F("appspec.yml", APPSPEC), ("pw", "hardlink", target, 0o644)])
    with pytest.raises(UnsafeArchiveError) as exc:
        safe_extract(archive, str(tmp_path / "out"))
    assert exc.value.member == "pw" and "hard link to %r points outside the archive" % target in str(exc.value)


def test_tar_hardlink_to_missing_member_rejected(tmp_path):
    archive = make_tar(tmp_path / "h.tar", [("pw", "hardlink", "nothere", 0o644)])
    with pytest.raises(UnsafeArchiveError, match="'pw'.*not an earlier regular file"):
        safe_extract(archive, str(tmp_path / "out"))


@pytest.mark.parametrize("kind,reason", [("chr", "device file"), ("blk", "device file"), ("fifo", "FIFO")])
def test_tar_special_members_rejected(tmp_path, kind, reason):
    archive = make_tar(tmp_path / "d.tar", [F("appspec.yml", APPSPEC), ("dev/null", kind, None, 0o666)])
    with pytest.raises(UnsafeArchiveError) as exc:
        safe_extract(archive, str(tmp_path / "out"))
    assert exc.value.member == "dev/null" and reason in str(exc.value)


@pytest.mark.parametrize("kind,reason", [("chr", "device file"), ("fifo", "FIFO")])
def test_zip_special_members_rejected(tmp_path, kind, reason):
    archive = make_zip(tmp_path / "d.zip", [F("appspec.yml", APPSPEC), ("dev/zero", kind, b"", 0o666)])
    with pytest.raises(UnsafeArchiveError) as exc:
        safe_extract(archive, str(tmp_path / "out"))
    assert exc.value.member == "dev/zero" and reason in str(exc.value)


def test_unsafe_error_is_a_revision_error():
    assert issubclass(UnsafeArchiveError, RevisionError)


# ---------------------------------------------------------------------------------------------
# what is preserved
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tar", "tgz", "zip"])
def test_modes_symlinks_and_times_preserved(tmp_path, fmt):
    entries = [
        F("appspec.yml", APPSPEC),
        D("bin", 0o750),
        F("bin/run.sh", b"#!/bin/sh\necho hi\n", 0o755),
        F("secret.conf", b"k=v", 0o600),
        F("suid", b"x", 0o4755),
        L("current", "bin/run.sh"),
        L("bin/self", "../secret.conf"),
        D("ro", 0o555),
        F("ro/inside", b"i", 0o444),
    ]
    archive = make_zip(tmp_path / "b.zip", entries) if fmt == "zip" else make_tar(tmp_path / ("b." + fmt), entries, gz=fmt == "tgz")
    out = tmp_path / "out"
    root = safe_extract(archive, str(out))
    assert root == str(out)

    def mode(p):
        return stat.S_IMODE(os.lstat(out / p).st_mode)

    assert mode("bin/run.sh") == 0o755
    assert mode("secret.conf") == 0o600
    assert mode("suid") == 0o755  # setuid dropped
    assert mode("bin") == 0o750
    assert mode("ro") == 0o555 and (out / "ro" / "inside").read_bytes() == b"i"
    assert os.readlink(out / "current") == "bin/run.sh" and (out / "current").read_bytes().startswith(b"#!/bin/sh")
    assert os.readlink(out / "bin" / "self") == "../secret.conf"
    expected_mtime = 1_600_000_000 if fmt != "zip" else time.mktime((2020, 9, 13, 12, 26, 40, 0, 0, -1))
    assert os.stat(out / "bin" / "run.sh").st_mtime == expected_mtime


def test_tar_hardlink_inside_is_copied(tmp_path):
    archive = make_tar(tmp_path / "h.tar", [F("a.txt", b"same", 0o640), ("b.txt", "hardlink", "a.txt", 0o640)])
    safe_extract(archive, str(tmp_path / "out"))
    assert (tmp_path / "out" / "b.txt").read_bytes() == b"same"
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "b.txt").st_mode) == 0o640


def test_implicit_directories_and_dot_prefix(tmp_path):
    archive = make_tar(tmp_path / "b.tar", [D("./", 0o700), F("./appspec.yml", APPSPEC), F("./deep/er/file", b"d")])
    out = tmp_path / "out"
    out.mkdir(mode=0o755)
    root = safe_extract(archive, str(out))
    assert root == str(out) and (out / "deep" / "er" / "file").read_bytes() == b"d"
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755  # the "./" entry does not change dest_dir itself


# ---------------------------------------------------------------------------------------------
# bundle root
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tgz", "zip"])
def test_single_top_level_dir_with_appspec_is_root(tmp_path, fmt):
    entries = [D("myapp"), F("myapp/appspec.yml", APPSPEC), F("myapp/scripts/start.sh", b"s", 0o755)]
    archive = make_zip(tmp_path / "b.zip", entries) if fmt == "zip" else make_tar(tmp_path / "b.tgz", entries, gz=True)
    root = safe_extract(archive, str(tmp_path / "out"))
    assert root == str(tmp_path / "out" / "myapp")
    assert read_appspec_text(archive, None) == (APPSPEC.decode(), "myapp/appspec.yml")
    top, entries_ = bundle_entries(archive)
    assert top == "myapp" and entries_ == {"appspec.yml": "file", "scripts": "dir", "scripts/start.sh": "file"}


def test_single_top_level_dir_without_appspec_is_not_root(tmp_path):
    archive = make_tar(tmp_path / "b.tar", [F("myapp/index.html")])
    assert safe_extract(archive, str(tmp_path / "out")) == str(tmp_path / "out")
    with pytest.raises(RevisionError, match="no appspec.yml or appspec.yaml in bundle"):
        read_appspec_text(archive, "tar")


def test_two_top_level_entries_root_is_dest(tmp_path):
    archive = make_tar(tmp_path / "b.tar", [F("myapp/appspec.yml", APPSPEC), F("README")])
    assert safe_extract(archive, str(tmp_path / "out")) == str(tmp_path / "out")


def test_macosx_folder_is_ignored_for_the_root_rule(tmp_path):
    archive = make_zip(tmp_path / "b.zip", [F("myapp/appspec.yml", APPSPEC), F("__MACOSX/myapp/._appspec.yml", b"junk")])
    assert safe_extract(archive, str(tmp_path / "out")) == str(tmp_path / "out" / "myapp")
    assert read_appspec_text(archive, "zip")[1] == "myapp/appspec.yml"


def test_appspec_yaml_fallback_and_custom_name(tmp_path):
    archive = make_tar(tmp_path / "b.tgz", [F("app/appspec.yaml", APPSPEC)], gz=True)
    assert safe_extract(archive, str(tmp_path / "o1")) == str(tmp_path / "o1" / "app")
    assert read_appspec_text(archive, "tgz") == (APPSPEC.decode(), "app/appspec.yaml")
    custom = make_zip(tmp_path / "c.zip", [F("deploy-spec.yml", APPSPEC), F("appspec.yml", b"other")])
    assert read_appspec_text(custom, None, appspec_name="deploy-spec.yml") == (APPSPEC.decode(), "deploy-spec.yml")
    with pytest.raises(RevisionError, match="no nope.yml in bundle"):
        read_appspec_text(custom, None, appspec_name="nope.yml")


def test_read_appspec_text_from_directory(tmp_path):
    (tmp_path / "b" / "app").mkdir(parents=True)
    (tmp_path / "b" / "app" / "appspec.yml").write_bytes(b"\xef\xbb\xbf" + APPSPEC)  # BOM stripped
    assert read_appspec_text(str(tmp_path / "b"), None) == (APPSPEC.decode(), "app/appspec.yml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RevisionError, match="no appspec.yml or appspec.yaml in directory"):
        read_appspec_text(str(tmp_path / "empty"), None)


def test_not_an_archive(tmp_path):
    (tmp_path / "b.zip").write_bytes(b"not a zip at all")
    with pytest.raises(RevisionError, match="is not a readable zip bundle"):
        read_appspec_text(str(tmp_path / "b.zip"), None)


# ---------------------------------------------------------------------------------------------
# local bundles
# ---------------------------------------------------------------------------------------------


def _app_dir(base):
    (base / "scripts").mkdir(parents=True)
    (base / "appspec.yml").write_bytes(APPSPEC)
    (base / "scripts" / "start.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(base / "scripts" / "start.sh", 0o755)
    (base / "z.txt").write_bytes(b"z")
    os.symlink("scripts/start.sh", base / "start")
    return base


def test_local_directory_packing_is_deterministic(tmp_path):
    src = _app_dir(tmp_path / "app")
    first = local_bundle(str(src), str(tmp_path / "c1"))
    os.utime(src / "z.txt", (1, 1))  # times and cache location do not change the bytes
    time.sleep(0.01)
    second = local_bundle(str(src), str(tmp_path / "c2"))
    assert first.sha256 == second.sha256 and first.size == second.size
    assert first.bundle_type == "tgz" and os.path.basename(first.path) == "local-%s.tar.gz" % first.sha256[:32]
    with tarfile.open(first.path) as tf:
        assert tf.getnames() == ["appspec.yml", "scripts", "start", "z.txt", "scripts/start.sh"]
        assert all(m.uid == 0 and m.uname == "" for m in tf.getmembers())
    (src / "z.txt").write_bytes(b"changed")
    assert local_bundle(str(src), str(tmp_path / "c1")).sha256 != first.sha256
    assert sorted(p for p in os.listdir(tmp_path / "c1") if p.startswith(".partial")) == []


def test_packed_directory_round_trips_through_safe_extract(tmp_path):
    src = _app_dir(tmp_path / "app")
    bundle = local_bundle(str(src), str(tmp_path / "cache"))
    root = safe_extract(bundle.path, str(tmp_path / "out"))
    assert stat.S_IMODE(os.stat(os.path.join(root, "scripts", "start.sh")).st_mode) == 0o755
    assert os.readlink(os.path.join(root, "start")) == "scripts/start.sh"


def test_local_directory_with_escaping_symlink_is_refused(tmp_path):
    src = _app_dir(tmp_path / "app")
    os.symlink("/etc/passwd", src / "pw")
    with pytest.raises(RevisionError, match="symlink to '/etc/passwd' points outside the bundle directory"):
        local_bundle(str(src), str(tmp_path / "cache"))


def test_local_bundle_file_is_used_in_place(tmp_path):
    archive = make_zip(tmp_path / "b.zip", [F("appspec.yml", APPSPEC)])
    got = local_bundle(archive, str(tmp_path / "cache"))
    import hashlib

    assert got == FetchedBundle(archive, "zip", None, None, hashlib.sha256(open(archive, "rb").read()).hexdigest(), os.path.getsize(archive))
    assert not (tmp_path / "cache").exists()
    with pytest.raises(RevisionError, match="neither a bundle file nor a directory"):
        local_bundle(str(tmp_path / "missing.zip"))


# ---------------------------------------------------------------------------------------------
# S3 fetch: failure mid-download leaves no partial file (the S3 behaviour itself is tested
# against a moto server in tests/integration/test_revision_s3.py)
# ---------------------------------------------------------------------------------------------


class _BrokenBody:
    def __init__(self):
        self.calls = 0

    def read(self, n):
        self.calls += 1
        if self.calls > 1:
            raise ConnectionResetError("connection reset by peer")
        return b"x" * 10

    def close(self):
        pass


class _FakeS3:
    """Stands in for a boto3 S3 client whose connection drops during the body."""

    def get_object(self, **kw):
        return {"ETag": '"abc"', "ContentLength": 100, "Body": _BrokenBody()}


def test_interrupted_download_leaves_nothing(tmp_path):
    with pytest.raises(ConnectionResetError):
        fetch_s3_bundle(_FakeS3(), "b", "k.zip", str(tmp_path), version="v1", etag="abc")
    assert os.listdir(tmp_path) == []
