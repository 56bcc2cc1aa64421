# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 12, host side: the host engine against a hostile application user and a hostile bundle.

Real files in temp dirs, real processes. Every case plants a "victim" tree outside the appspec
destinations (standing in for /etc), attacks through a path the engine touches, and asserts that the
victim did not change and that the error names the path or the limit at fault.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import stat
import tarfile
import threading
import time
import zipfile

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.host import hooks as hr
from ansible_collections.rollwright.deploy.plugins.module_utils.host import fs
from ansible_collections.rollwright.deploy.plugins.module_utils.host import events as hev
from ansible_collections.rollwright.deploy.plugins.module_utils.host import install as hi
from ansible_collections.rollwright.deploy.plugins.module_utils.host import state as hst
from ansible_collections.rollwright.deploy.plugins.module_utils.host import unpack as hun
from ansible_collections.rollwright.deploy.plugins.module_utils.revisions import revision as rev
from ansible_collections.rollwright.deploy.plugins.module_utils.redact import redact_text
from tests.unit.test_host_install import make_bundle as make_tree

pytestmark = pytest.mark.hostile

ATTACKER_UID = 54321  # an unprivileged uid that no appspec names (needs no passwd entry to own files)
OWNER = "nobody"  # an existing user an appspec can name as owner


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("ownership cases need root (chown)")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def snapshot(root) -> dict:
    """Everything under ``root`` (lstat based): type, mode, owner, content digest or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames + [""]:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            item = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid)
            if stat.S_ISLNK(st.st_mode):
                item += (os.readlink(path),)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    item += (hashlib.sha256(handle.read()).hexdigest(),)
            out[os.path.relpath(path, root)] = item
    return out


@pytest.fixture
def victim(tmp_path):
    """A directory standing in for /etc, with a passwd file and a subdirectory."""
    root = tmp_path / "victim"
    (root / "sub").mkdir(parents=True)
    (root / "passwd").write_text("root:x:0:0\n")
    (root / "sub" / "shadow").write_text("secret\n")
    os.chmod(root / "passwd", 0o644)
    before = snapshot(root)
    yield root
    assert snapshot(root) == before, "the victim tree outside the appspec destinations changed"


def spec(dest, source="app", **extra):
    return dict({"version": "0.0", "os": "linux", "files": [{"source": source, "destination": str(dest)}],
                 "file_exists_behavior": None, "permissions": [], "hooks": {}}, **extra)


def swap_for_symlink(path, target) -> None:
    """What the app user does: move the real entry aside and put a symlink in its place."""
    os.rename(path, str(path) + ".moved")
    os.symlink(str(target), path)


@pytest.fixture
def installed(tmp_path):
    """v1 installed at <tmp>/dest: conf/app.conf, bin/run."""
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "dest"
    b1 = make_tree(tmp_path / "b1", {"app/conf/app.conf": "v1", "app/bin/run": "#!/bin/sh\n"})
    hi.install(state, "d-AAAAAAAA1", spec(dest), b1)
    b2 = make_tree(tmp_path / "b2", {"app/conf/other.conf": "v2", "app/bin/run": "#!/bin/sh\n"})
    return state, dest, b2


# ----------------------------------------------------------------------------------------------
# host_fs primitives
# ----------------------------------------------------------------------------------------------

def test_walk_refuses_a_symlink_on_the_way(tmp_path, victim):
    (tmp_path / "a").mkdir()
    os.symlink(victim, tmp_path / "a" / "link")
    with pytest.raises(fs.UnsafePathError) as err:
        fs.open_dir(str(tmp_path / "a" / "link" / "sub"), {0, os.geteuid()})
    assert err.value.path == str(tmp_path / "a" / "link") and "symlink" in str(err.value)


def test_walk_refuses_a_directory_owned_by_someone_else(tmp_path, victim):
    needs_root()
    (tmp_path / "theirs").mkdir()
    os.chown(tmp_path / "theirs", ATTACKER_UID, ATTACKER_UID)
    with pytest.raises(fs.UnsafePathError) as err:
        with fs.parent_dir(str(tmp_path / "theirs" / "file"), {0}):
            pass
    assert str(tmp_path / "theirs") in str(err.value) and f"uid {ATTACKER_UID}" in str(err.value)


def test_walk_refuses_a_world_writable_directory_without_sticky_bit(tmp_path, victim):
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    with pytest.raises(fs.UnsafePathError, match="writable by everyone"):
        fs.open_dir(str(tmp_path / "open"), {0, os.geteuid()})
    os.chmod(tmp_path / "open", 0o1777)  # sticky like /tmp: entries can only be renamed by their owner
    os.close(fs.open_dir(str(tmp_path / "open"), {0, os.geteuid()}))


def test_create_exclusive_never_opens_a_planted_symlink(tmp_path, victim):
    os.symlink(victim / "passwd", tmp_path / "new.conf")
    with fs.dir_fd(str(tmp_path), {0, os.geteuid()}) as dfd:
        with pytest.raises(FileExistsError):
            fs.create_exclusive(dfd, "new.conf")


def test_write_replaces_a_planted_symlink_instead_of_writing_through(tmp_path, victim):
    os.symlink(victim / "passwd", tmp_path / "state.json")
    with fs.dir_fd(str(tmp_path), {0, os.geteuid()}) as dfd:
        fs.write_bytes_at(dfd, "state.json", b"{}")
    assert not os.path.islink(tmp_path / "state.json") and (tmp_path / "state.json").read_text() == "{}"
    assert stat.S_IMODE(os.stat(tmp_path / "state.json").st_mode) == 0o600


def test_log_open_refuses_a_symlink_or_hard_link(tmp_path, victim):
    os.symlink(victim / "passwd", tmp_path / "scripts.log")
    with pytest.raises(OSError):
        hr.open_log(str(tmp_path / "scripts.log"))
    os.unlink(tmp_path / "scripts.log")
    (tmp_path / "inner").mkdir()
    os.link(victim / "passwd", tmp_path / "inner" / "scripts.log")
    with pytest.raises(OSError, match="single link"):
        hr.open_log(str(tmp_path / "inner" / "scripts.log"))
    os.unlink(tmp_path / "inner" / "scripts.log")


def test_remove_unlinks_a_symlink_never_its_target(tmp_path, victim):
    os.symlink(victim / "passwd", tmp_path / "entry")
    os.symlink(victim, tmp_path / "dir_entry")
    with fs.dir_fd(str(tmp_path), {0, os.geteuid()}) as dfd:
        assert fs.remove_at(dfd, "entry") and fs.remove_at(dfd, "dir_entry")
    assert not os.path.lexists(tmp_path / "entry") and not os.path.lexists(tmp_path / "dir_entry")


def test_rmtree_does_not_follow_symlinks_inside_the_tree(tmp_path, victim):
    (tmp_path / "tree" / "deep").mkdir(parents=True)
    os.symlink(victim, tmp_path / "tree" / "deep" / "escape")
    with fs.dir_fd(str(tmp_path), {0, os.geteuid()}) as dfd:
        fs.rmtree_at(dfd, "tree")
    assert not os.path.lexists(tmp_path / "tree")


# ----------------------------------------------------------------------------------------------
# cleanup (undo of the previous install)
# ----------------------------------------------------------------------------------------------

def test_cleanup_parent_swapped_for_symlink_to_victim_is_refused(tmp_path, installed, victim):
    state, dest, b2 = installed
    # v1's cleanup list has dest/conf/app.conf; the app user points conf at the victim
    swap_for_symlink(dest / "conf", victim)
    with pytest.raises(hst.InstallError) as err:
        hi.install(state, "d-AAAAAAAA2", spec(dest), b2)
    assert f"refusing {dest}/conf: is a symlink" in str(err.value) and "nothing was removed" in str(err.value)
    assert (dest / "bin" / "run").exists()  # refused before anything was deleted


def test_cleanup_entry_in_directory_owned_by_attacker_is_refused(tmp_path, installed, victim):
    needs_root()
    state, dest, b2 = installed
    os.chown(dest / "conf", ATTACKER_UID, ATTACKER_UID)
    with pytest.raises(hst.InstallError) as err:
        hi.install(state, "d-AAAAAAAA2", spec(dest), b2)
    assert f"{dest}/conf" in str(err.value) and f"uid {ATTACKER_UID}" in str(err.value)


def test_cleanup_file_swapped_for_symlink_removes_only_the_link(tmp_path, installed, victim):
    state, dest, b2 = installed
    os.unlink(dest / "conf" / "app.conf")
    os.symlink(victim / "passwd", dest / "conf" / "app.conf")
    res = hi.install(state, "d-AAAAAAAA2", spec(dest), b2)
    assert f"{dest}/conf/app.conf" in res.removed and not os.path.lexists(dest / "conf" / "app.conf")


def test_cleanup_directory_replaced_by_symlink_to_victim_dir(tmp_path, installed, victim):
    state, dest, b2 = installed
    os.unlink(dest / "conf" / "app.conf")
    os.rmdir(dest / "conf")
    os.symlink(victim, dest / "conf")  # v1's cleanup list names conf/app.conf: unlinking it would hit the victim
    with pytest.raises(hst.InstallError, match=f"refusing {dest}/conf: is a symlink"):
        hi.install(state, "d-AAAAAAAA2", spec(dest), b2)
    assert (dest / "bin" / "run").exists()


def test_cleanup_directory_replaced_by_a_file_is_handled(tmp_path, installed, victim):
    state, dest, b2 = installed
    os.unlink(dest / "conf" / "app.conf")
    os.rmdir(dest / "conf")
    (dest / "conf").write_text("not a directory any more\n")
    res = hi.install(state, "d-AAAAAAAA2", spec(dest), b2)  # conf/app.conf is skipped, conf itself removed
    assert f"{dest}/conf" in res.removed and (dest / "conf" / "other.conf").read_text() == "v2"


def test_cleanup_list_naming_paths_through_a_symlink_is_refused(tmp_path, installed, victim):
    state, dest, b2 = installed
    os.symlink(victim, tmp_path / "shortcut")
    # a tampered cleanup list: the attacker cannot write it (sealed), but a path through a link is refused anyway
    hst.atomic_write_json(state.cleanup_file, {"deployment_id": "d-AAAAAAAA1", "paths": [str(tmp_path / "shortcut" / "passwd")]})
    with pytest.raises(hst.InstallError, match=f"refusing {tmp_path}/shortcut: is a symlink"):
        hi.install(state, "d-AAAAAAAA2", spec(dest), b2)


# ----------------------------------------------------------------------------------------------
# destinations and copies
# ----------------------------------------------------------------------------------------------

def test_destination_parent_is_a_symlink_refused_before_anything(tmp_path, victim):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    (tmp_path / "opt").mkdir()
    os.symlink(victim, tmp_path / "opt" / "app")
    b1 = make_tree(tmp_path / "b1", {"app/passwd": "owned\n"})
    with pytest.raises(hst.InstallError) as err:
        hi.install(state, "d-AAAAAAAA1", spec(tmp_path / "opt" / "app" / "sub"), b1)
    assert f"refusing {tmp_path}/opt/app: is a symlink" in str(err.value) and "files[0].destination" in str(err.value)
    assert hst.read_json(state.cleanup_file) is None


def test_destination_owned_by_someone_the_appspec_does_not_name_is_refused(tmp_path, victim):
    needs_root()
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    (tmp_path / "home" / "bob").mkdir(parents=True)
    os.chown(tmp_path / "home" / "bob", ATTACKER_UID, ATTACKER_UID)
    b1 = make_tree(tmp_path / "b1", {"app/x": "1"})
    with pytest.raises(hst.InstallError, match=f"{tmp_path}/home/bob.*uid {ATTACKER_UID}"):
        hi.install(state, "d-AAAAAAAA1", spec(tmp_path / "home" / "bob" / "app"), b1)
    assert not (tmp_path / "home" / "bob" / "app").exists()


def test_directory_owned_by_the_appspec_owner_is_trusted(tmp_path, victim):
    needs_root()
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "srv"
    b1 = make_tree(tmp_path / "b1", {"app/conf/a": "1"})
    perms = [{"object": str(dest), "pattern": "**", "except": [], "owner": OWNER, "group": None, "mode": None,
              "acls": [], "context": None, "type": ["directory"]}]
    hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)
    assert os.stat(dest / "conf").st_uid == pwd.getpwnam(OWNER).pw_uid
    b2 = make_tree(tmp_path / "b2", {"app/conf/b": "2"})
    hi.install(state, "d-AAAAAAAA2", spec(dest, permissions=perms), b2)  # walks through nobody's conf: trusted
    assert (dest / "conf" / "b").read_text() == "2" and not (dest / "conf" / "a").exists()


def test_overwrite_of_a_symlink_to_victim_replaces_the_link(tmp_path, victim):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(victim / "passwd", dest / "passwd")
    b1 = make_tree(tmp_path / "b1", {"app/passwd": "bundle\n"})
    hi.install(state, "d-AAAAAAAA1", spec(dest, file_exists_behavior="OVERWRITE"), b1)
    assert not os.path.islink(dest / "passwd") and (dest / "passwd").read_text() == "bundle\n"


def test_old_predictable_temp_name_planted_as_symlink_is_harmless(tmp_path, victim):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "index.html").write_text("stray\n")
    for pid in range(os.getpid() - 2, os.getpid() + 3):  # the name the engine used to use: .<name>.rollwright-<pid>
        os.symlink(victim / "passwd", dest / f".index.html.rollwright-{pid}")
    b1 = make_tree(tmp_path / "b1", {"app/index.html": "new\n"})
    hi.install(state, "d-AAAAAAAA1", spec(dest, file_exists_behavior="OVERWRITE"), b1)
    assert (dest / "index.html").read_text() == "new\n"


def test_race_directory_swapped_between_mkdir_and_copy_is_refused(tmp_path, victim, monkeypatch):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "dest"
    b1 = make_tree(tmp_path / "b1", {"app/conf/passwd": "bundle\n"})
    real_mkdir = hi._mkdir_one

    def mkdir_then_swap(path, uids):
        real_mkdir(path, uids)
        if path.endswith("/conf"):
            swap_for_symlink(path, victim)  # the attacker wins the race right after the directory appears

    monkeypatch.setattr(hi, "_mkdir_one", mkdir_then_swap)
    with pytest.raises(hst.InstallError) as err:
        hi.install(state, "d-AAAAAAAA1", spec(dest), b1)
    assert f"refusing {dest}/conf: is a symlink" in str(err.value)


def test_race_thread_keeps_swapping_while_installing(tmp_path, victim):
    """A thread flips dest/conf between a directory and a symlink to the victim as fast as it can while
    installs run: whatever the interleaving, nothing is written into the victim."""
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "dest"
    files = {f"app/conf/f{i}.conf": str(i) for i in range(40)}
    b1 = make_tree(tmp_path / "b1", files)
    stop = threading.Event()

    def flipper():
        conf = str(dest / "conf")
        while not stop.is_set():
            try:
                if os.path.isdir(conf) and not os.path.islink(conf):
                    os.rename(conf, conf + f".{time.monotonic_ns()}")
                    os.symlink(victim, conf)
                elif os.path.islink(conf):
                    os.unlink(conf)
            except OSError:
                pass

    thread = threading.Thread(target=flipper, daemon=True)
    thread.start()
    outcomes = []
    try:
        for i in range(5):
            try:
                hi.install(state, f"d-AAAAAAAA{i}", spec(dest), b1)
                outcomes.append("installed")
            except hst.InstallError as exc:
                outcomes.append("refused")
                assert "refusing" in str(exc) or "install failed" in str(exc) or "DISALLOW" in str(exc), str(exc)
    finally:
        stop.set()
        thread.join()
    assert outcomes  # the victim fixture asserts nothing was written through the link


def test_permissions_object_swapped_for_symlink_before_chmod(tmp_path, victim, monkeypatch):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "dest"
    b1 = make_tree(tmp_path / "b1", {"app/conf/key.pem": "k"})
    perms = [{"object": str(dest), "pattern": "**", "except": [], "owner": OWNER if os.geteuid() == 0 else None,
              "group": None, "mode": "0777", "acls": [], "context": None, "type": ["file"]}]
    real_apply = hi.apply_permission

    def swap_then_apply(op, warnings, uids=None):
        os.unlink(op.path)
        os.symlink(victim / "passwd", op.path)  # chmod 0777 / chown would hit the victim if followed
        real_apply(op, warnings, uids)

    monkeypatch.setattr(hi, "apply_permission", swap_then_apply)
    hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)
    assert os.path.islink(dest / "conf" / "key.pem")


def test_permissions_parent_swapped_for_symlink_before_apply_is_refused(tmp_path, victim, monkeypatch):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "dest"
    b1 = make_tree(tmp_path / "b1", {"app/sub/passwd": "bundle"})
    perms = [{"object": str(dest), "pattern": "**", "except": [], "owner": None, "group": None, "mode": "0666",
              "acls": [], "context": None, "type": ["file"]}]
    real_apply = hi.apply_permission

    def swap_then_apply(op, warnings, uids=None):
        swap_for_symlink(os.path.dirname(op.path), victim)
        real_apply(op, warnings, uids)

    monkeypatch.setattr(hi, "apply_permission", swap_then_apply)
    with pytest.raises(hst.InstallError, match=f"refusing {dest}/sub: is a symlink"):
        hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)


# ----------------------------------------------------------------------------------------------
# host state
# ----------------------------------------------------------------------------------------------

def _bundle_tgz(path, files: dict, modes: dict | None = None, links: dict | None = None) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = (modes or {}).get(name, 0o755 if name.endswith(".sh") else 0o644)
            tar.addfile(info, io.BytesIO(data))
        for name, mode in (modes or {}).items():
            if name.endswith("/"):
                info = tarfile.TarInfo(name.rstrip("/"))
                info.type = tarfile.DIRTYPE
                info.mode = mode
                tar.addfile(info)
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return str(path)


def _request(deployment_id, events, dest, bundle=None, **extra):
    hooks = extra.pop("hooks", {})
    appspec = {"version": "0.0", "os": "linux", "files": [{"source": "site", "destination": str(dest)}],
               "file_exists_behavior": None, "permissions": [], "hooks": hooks}
    return hev.DeploymentRequest(deployment_id=deployment_id, events=events, appspec=extra.pop("appspec", appspec),
                                 bundle=bundle, **extra)


def _deploy(tmp_path, bundle, events=("DownloadBundle", "BeforeInstall", "Install"), deployment_id="d-AAAAAAAA1", **extra):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    return state, hev.HostDeployment(state, _request(deployment_id, list(events), tmp_path / "dest", bundle, **extra)).execute()


def test_state_is_sealed_and_the_bundle_removed_once_unpacked(tmp_path):
    bundle = _bundle_tgz(tmp_path / "b.tgz", {"appspec.yml": "version: 0.0\n", "site/secret.conf": "pw"},
                         modes={"site/secret.conf": 0o600})
    state, run = _deploy(tmp_path, bundle)
    assert not run.failed, run.message
    ddir = state.deployment_dir("d-AAAAAAAA1")

    def mode(path):
        return stat.S_IMODE(os.lstat(path).st_mode)

    assert mode(ddir) == 0o700 and mode(state.logs_dir("d-AAAAAAAA1")) == 0o700
    for name in ("revision.json", "appspec.json", "status.json"):
        assert mode(os.path.join(ddir, name)) == 0o600, name
    assert mode(state.install_file) == 0o600 and mode(state.cleanup_file) == 0o600
    assert [n for n in os.listdir(ddir) if n.startswith("bundle")] == []
    record = state.load_revision("d-AAAAAAAA1")
    with open(bundle, "rb") as handle:
        assert record["sha256"] == hashlib.sha256(handle.read()).hexdigest() and record["bundle_kept"] is False


def test_state_deployment_dir_traversable_only_for_runas_scripts(tmp_path):
    bundle = _bundle_tgz(tmp_path / "b.tgz", {"appspec.yml": "version: 0.0\n", "site/a": "1", "s.sh": "#!/bin/sh\n"})
    hooks = {"AfterInstall": [{"location": "s.sh", "timeout": 10, "runas": OWNER}]}
    state, run = _deploy(tmp_path, bundle, events=("DownloadBundle",), hooks=hooks)
    assert not run.failed, run.message
    assert stat.S_IMODE(os.lstat(state.deployment_dir("d-AAAAAAAA1")).st_mode) == 0o711
    assert stat.S_IMODE(os.lstat(state.logs_dir("d-AAAAAAAA1")).st_mode) == 0o700


def test_state_logs_dir_swapped_for_symlink_is_refused(tmp_path, victim):
    bundle = _bundle_tgz(tmp_path / "b.tgz", {"appspec.yml": "version: 0.0\n", "site/a": "1", "s.sh": "#!/bin/sh\necho hi\n"})
    state, run = _deploy(tmp_path, bundle, events=("DownloadBundle",))
    logs = state.logs_dir("d-AAAAAAAA1")
    os.rmdir(logs)
    os.symlink(victim, logs)
    with pytest.raises(hst.StateError, match=f"refusing {logs}: is a symlink"):
        hooks = {"AfterInstall": [{"location": "s.sh", "timeout": 10, "runas": None}]}
        _deploy(tmp_path, None, events=("AfterInstall",), hooks=hooks)


def test_state_archive_dir_swapped_for_symlink_is_not_extracted_into(tmp_path, victim):
    bundle = _bundle_tgz(tmp_path / "b.tgz", {"appspec.yml": "version: 0.0\n", "site/passwd": "bundle"})
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    state.ensure_deployment_dir("d-AAAAAAAA1")
    os.symlink(victim, state.archive_dir("d-AAAAAAAA1"))
    state, run = _deploy(tmp_path, bundle, events=("DownloadBundle",))
    assert not run.failed, run.message
    assert os.path.isdir(state.archive_dir("d-AAAAAAAA1")) and not os.path.islink(state.archive_dir("d-AAAAAAAA1"))


def test_state_archive_dir_symlink_is_refused_when_read(tmp_path, victim):
    bundle = _bundle_tgz(tmp_path / "b.tgz", {"appspec.yml": "version: 0.0\n", "site/a": "1"})
    state, run = _deploy(tmp_path, bundle, events=("DownloadBundle",))
    archive = state.archive_dir("d-AAAAAAAA1")
    os.rename(archive, archive + ".moved")
    os.symlink(victim, archive)
    with pytest.raises(hst.StateError, match=f"refusing {archive}: is a symlink"):
        state.bundle_root("d-AAAAAAAA1")


def test_state_pointer_swapped_for_symlink_is_refused(tmp_path, victim):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    state.set_last_successful("d-AAAAAAAA1")
    os.unlink(os.path.join(state.group_dir, "last_successful"))
    os.symlink(victim / "passwd", os.path.join(state.group_dir, "last_successful"))
    with pytest.raises(hst.StateError, match="last_successful"):
        assert state.last_successful is None  # raises before the comparison
    state.set_last_successful("d-AAAAAAAA2")  # a write replaces the link, never writes through it
    assert state.last_successful == "d-AAAAAAAA2"


def test_state_cleanup_file_symlink_to_victim_is_refused(tmp_path, installed, victim):
    state, dest, b2 = installed
    os.unlink(state.cleanup_file)
    os.symlink(victim / "passwd", state.cleanup_file)
    with pytest.raises(hst.StateError, match="cleanup.json"):
        hi.install(state, "d-AAAAAAAA2", spec(dest), b2)


def test_state_group_dir_owned_by_attacker_is_refused(tmp_path, victim):
    needs_root()
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    state.ensure_group_dir()
    os.chown(state.group_dir, ATTACKER_UID, ATTACKER_UID)
    with pytest.raises(hst.StateError, match=f"{state.group_dir}.*uid {ATTACKER_UID}"):
        state.set_most_recent("d-AAAAAAAA1")


def test_state_deployments_dir_symlink_is_refused_by_prune(tmp_path, victim):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    state.ensure_group_dir()
    os.symlink(victim, state.deployments_dir)
    with pytest.raises(hst.StateError, match="deployments: is a symlink"):
        state.prune(1, current="d-AAAAAAAA1")


def test_previous_revisions_keep_no_unpacked_files(tmp_path):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    for i in range(1, 4):
        bundle = _bundle_tgz(tmp_path / f"b{i}.tgz", {"appspec.yml": "version: 0.0\n", f"site/v{i}": str(i)})
        dep = f"d-AAAAAAAA{i}"
        run = hev.HostDeployment(state, _request(dep, ["DownloadBundle", "BeforeInstall", "Install"], tmp_path / "dest", bundle,
                                                 complete=True)).execute()
        assert not run.failed, run.message
    kept = {d: os.path.isdir(state.archive_dir(d)) for d in state.list_deployments()}
    assert kept == {"d-AAAAAAAA1": False, "d-AAAAAAAA2": False, "d-AAAAAAAA3": True}, kept


def test_bundle_changed_between_hash_and_copy_is_refused(tmp_path, monkeypatch):
    bundle = _bundle_tgz(tmp_path / "b.tgz", {"appspec.yml": "version: 0.0\n", "site/a": "1"})
    evil = _bundle_tgz(tmp_path / "evil.tgz", {"appspec.yml": "version: 0.0\n", "site/a": "evil"})
    real = hun.sha256_file

    def hash_then_swap(path):
        digest = real(path)
        os.replace(evil, bundle)  # swapped after it was hashed, before it is copied
        return digest

    monkeypatch.setattr(hun, "sha256_file", hash_then_swap)
    state, run = _deploy(tmp_path, bundle, events=("DownloadBundle",))
    assert run.failed and "changed while it was copied" in run.message, run.message
    assert not os.path.exists(state.archive_dir("d-AAAAAAAA1"))


# ----------------------------------------------------------------------------------------------
# unpack limits and modes
# ----------------------------------------------------------------------------------------------

def _zip(path, members: list[tuple[str, bytes]], links: dict | None = None) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777) << 16
            archive.writestr(info, target)
    return str(path)


@pytest.mark.parametrize("limit,members,options", [
    ("ratio", [("appspec.yml", b"version: 0.0\n"), ("zeros", b"\0" * (8 * 1024 * 1024))], None),
    ("total_bytes", [("appspec.yml", b"version: 0.0\n"), ("a", os.urandom(3000)), ("b", os.urandom(3000))],
     {"total_bytes": 5000}),
    ("member_bytes", [("appspec.yml", b"version: 0.0\n"), ("big", os.urandom(5000))], {"member_bytes": 4096}),
    ("members", [("appspec.yml", b"version: 0.0\n")] + [(f"f{i}", b"x") for i in range(30)], {"members": 20}),
])
def test_unpack_limit_exceeded_fails_naming_it_and_writes_nothing(tmp_path, limit, members, options):
    bundle = _zip(tmp_path / "bomb.zip", members)
    state, run = _deploy(tmp_path, bundle, events=("DownloadBundle",), unpack_limits=options)
    assert run.failed and f"unpack limit unpack_limits.{limit} exceeded" in run.message, run.message
    assert not os.path.exists(state.archive_dir("d-AAAAAAAA1"))
    assert [n for n in os.listdir(state.deployment_dir("d-AAAAAAAA1")) if n.startswith("bundle")] == []


def test_tar_gz_bomb_fails_on_ratio(tmp_path):
    path = tmp_path / "bomb.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(4):
            info = tarfile.TarInfo(f"zeros{i}")
            info.size = 4 * 1024 * 1024
            tar.addfile(info, io.BytesIO(b"\0" * info.size))
    with pytest.raises(rev.UnpackLimitError, match="unpack_limits.ratio"):
        rev.safe_extract(str(path), str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []


def test_long_symlink_target_fails_naming_the_limit(tmp_path):
    bundle = _zip(tmp_path / "l.zip", [("appspec.yml", b"version: 0.0\n")], links={"link": "a/" * 600 + "x"})
    with pytest.raises(rev.UnpackLimitError, match="unpack_limits.symlink_target.*'link'"):
        rev.safe_extract(bundle, str(tmp_path / "out"))


def test_not_enough_free_space_fails_before_writing(tmp_path, monkeypatch):
    bundle = _zip(tmp_path / "b.zip", [("appspec.yml", b"version: 0.0\n"), ("data", os.urandom(100_000))])
    real = os.statvfs

    def tiny(path):
        st = real(path)
        return os.statvfs_result((st.f_bsize, 4096, 10, 10, 10, st.f_files, st.f_ffree, st.f_favail, st.f_flag, st.f_namemax))

    monkeypatch.setattr(rev.os, "statvfs", tiny)
    with pytest.raises(rev.RevisionError, match="not enough free space.*needs 1000013 bytes|not enough free space"):
        rev.safe_extract(bundle, str(tmp_path / "out"))
    assert os.listdir(tmp_path / "out") == []


def test_bad_limit_option_is_named():
    with pytest.raises(rev.RevisionError, match="unpack_limits.ratio must be an integer >= 1"):
        rev.UnpackLimits.from_options({"ratio": 0})
    with pytest.raises(rev.RevisionError, match="unknown limit 'bytes'"):
        rev.UnpackLimits.from_options({"bytes": 1})


def test_world_writable_and_setuid_modes_are_masked(tmp_path):
    bundle = _bundle_tgz(tmp_path / "m.tgz", {"appspec.yml": "version: 0.0\n", "scripts/run.sh": "#!/bin/sh\n",
                                              "conf/a": "1"},
                         modes={"scripts/": 0o777, "scripts/run.sh": 0o4777, "conf/a": 0o666, "conf/": 0o2775})
    out = tmp_path / "out"
    rev.safe_extract(bundle, str(out))

    def mode(rel):
        return stat.S_IMODE(os.lstat(out / rel).st_mode)

    assert (mode("scripts"), mode("scripts/run.sh"), mode("conf/a"), mode("conf")) == (0o755, 0o755, 0o644, 0o755)


# ----------------------------------------------------------------------------------------------
# hooks: containment and output
# ----------------------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture
def revroot(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    return str(root), str(tmp_path / "logs" / "scripts.log")


def _script(root, name, body):
    path = os.path.join(root, name)
    with open(path, "w") as handle:
        handle.write(body)
    os.chmod(path, 0o755)


CTX = hr.HookContext("d-AAAAAAAA1", "app", "dg")


@pytest.mark.parametrize("body", [
    # a child in a new session, the script still running
    "#!/bin/sh\nsetsid sleep 300 &\necho $! > \"$0.pid\"\nsleep 300\n",
    # double fork: the intermediate exits, the setsid grandchild is orphaned (re-parented to the subreaper)
    "#!/bin/sh\n( setsid sh -c 'echo $$ > \"$0.pid\"; exec sleep 300' \"$0\" & )\nsleep 300\n",
])
def test_setsid_child_is_killed_at_the_timeout(revroot, body):
    root, log = revroot
    _script(root, "hang.sh", body)
    res = hr.run_event("ApplicationStart", [{"location": "hang.sh", "timeout": 1}], root, CTX, log, grace=1)
    assert res.status == "Failed" and res.scripts[0].timed_out and "timeout of 1 s" in res.message
    for _attempt in range(50):
        if os.path.exists(os.path.join(root, "hang.sh.pid")):
            break
        time.sleep(0.05)
    child = int(open(os.path.join(root, "hang.sh.pid")).read())
    time.sleep(0.2)
    assert not _alive(child), f"the setsid child {child} survived the timeout"


SECRET_OUTPUT = ("DB_PASSWORD=hunter2\nexport API_TOKEN='tok en'\nclient_secret: s3cr3t\n"
                 "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\ncommit 0123456789abcdef0123456789abcdef01234567\n")


def test_failed_hook_output_is_redacted_and_the_log_keeps_it_sealed(revroot):
    root, log = revroot
    with open(os.path.join(root, "out.txt"), "w") as handle:
        handle.write(SECRET_OUTPUT)
    _script(root, "leak.sh", "#!/bin/sh\ncat out.txt\nexit 1\n")
    res = hr.run_event("ValidateService", [{"location": "leak.sh", "timeout": 10}], root, CTX, log)
    tail = res.scripts[0].output_tail
    for secret in ("hunter2", "tok en", "s3cr3t", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"):
        assert secret not in tail, (secret, tail)
    assert "DB_PASSWORD=[REDACTED]" in tail and "client_secret: [REDACTED]" in tail
    assert "0123456789abcdef0123456789abcdef01234567" in tail  # a lower-case hex digest is not a secret
    assert "hunter2" in open(log).read() and stat.S_IMODE(os.stat(log).st_mode) == 0o600


def test_successful_hook_returns_no_output(revroot):
    root, log = revroot
    _script(root, "ok.sh", "#!/bin/sh\necho DB_PASSWORD=hunter2\n")
    res = hr.run_event("ValidateService", [{"location": "ok.sh", "timeout": 10}], root, CTX, log)
    assert res.status == "Succeeded" and res.scripts[0].output_tail == ""
    assert "hunter2" not in json.dumps(res.to_dict())


def test_hook_output_none_returns_nothing_even_on_failure(revroot):
    root, log = revroot
    _script(root, "bad.sh", "#!/bin/sh\necho DB_PASSWORD=hunter2\nexit 3\n")
    res = hr.run_event("ValidateService", [{"location": "bad.sh", "timeout": 10}], root, CTX, log, output=hr.OUTPUT_NONE)
    assert res.status == "Failed" and res.scripts[0].output_tail == "" and "exit code 3" in res.message


@pytest.mark.parametrize("text,kept,gone", [
    ("PASSWORD=x1", "PASSWORD=[REDACTED]", "x1"),
    ("mysql_root_password = 'p w'", "mysql_root_password = '[REDACTED]'", "p w"),
    ("GITHUB_TOKEN=ghp_abc", "GITHUB_TOKEN=[REDACTED]", "ghp_abc"),
    ("aws_secret_access_key=abc/def", "aws_secret_access_key=[REDACTED]", "abc/def"),
    ("key ASIAABCDEFGHIJKLMNOP used", "key [REDACTED] used", "ASIAABCDEFGHIJKLMNOP"),
    ("no secrets here: 42", "no secrets here: 42", "\0"),
])
def test_redaction_shapes(text, kept, gone):
    out = redact_text(text)
    assert kept in out and gone not in out


# ----------------------------------------------------------------------------------------------
# the appspec the host receives
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("edit,expected", [
    (lambda a: a["hooks"].update({"AfterInstall": [{"location": "s.sh", "timeout": "abc", "runas": None}]}),
     "hooks.AfterInstall[0].timeout"),
    (lambda a: a["files"].append({"source": "x", "destination": "relative/path"}), "files[1].destination"),
    (lambda a: a.update(files="not a list"), "files"),
    (lambda a: a["hooks"].update({"Install": [{"location": "s.sh", "timeout": 5, "runas": None}]}), "hooks.Install"),
])
def test_invalid_appspec_on_the_host_is_a_clear_error(tmp_path, edit, expected):
    appspec = {"version": "0.0", "os": "linux", "files": [{"source": "site", "destination": str(tmp_path / "d")}],
               "file_exists_behavior": None, "permissions": [], "hooks": {}}
    edit(appspec)
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    with pytest.raises(hst.StateError) as err:
        hev.HostDeployment(state, hev.DeploymentRequest("d-AAAAAAAA1", ["Install"], appspec=appspec))
    assert "not a valid normalised appspec" in str(err.value) and expected in str(err.value), str(err.value)
    assert not os.path.exists(tmp_path / "state")


def test_tampered_stored_appspec_of_previous_revision_fails_clearly(tmp_path):
    bundle = _bundle_tgz(tmp_path / "b.tgz", {"appspec.yml": "version: 0.0\n", "site/a": "1", "stop.sh": "#!/bin/sh\n"})
    state, run = _deploy(tmp_path, bundle, complete=True)
    assert not run.failed, run.message
    spec_file = state.appspec_file("d-AAAAAAAA1")
    data = hst.read_json(spec_file)
    data["hooks"] = {"ApplicationStop": [{"location": "stop.sh", "timeout": "abc", "runas": None}]}
    hst.atomic_write_json(spec_file, data)
    state, run = _deploy(tmp_path, None, events=("ApplicationStop",), deployment_id="d-AAAAAAAA2")
    assert run.failed and "stored appspec of deployment d-AAAAAAAA1" in run.message and "timeout" in run.message
