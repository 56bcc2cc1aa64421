# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""host_install: the agent's install algorithm on real files in temp dirs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.rollwright.deploy.plugins.module_utils.host import install as hi
from ansible_collections.rollwright.deploy.plugins.module_utils.host import permissions as hp
from ansible_collections.rollwright.deploy.plugins.module_utils.host import state as hst


def make_bundle(root, files: dict, links: dict | None = None, modes: dict | None = None):
    for rel, content in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(content)
    for rel, target in (links or {}).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    for rel, mode in (modes or {}).items():
        os.chmod(os.path.join(root, rel), mode)
    return str(root)


@pytest.fixture
def world(tmp_path):
    state = hst.HostState(str(tmp_path / "state"), "app", "dg")
    dest = tmp_path / "dest"
    return state, tmp_path, str(dest)


def spec(dest, source="app", **extra):
    return dict({"version": "0.0", "os": "linux", "files": [{"source": source, "destination": dest}],
                 "file_exists_behavior": None, "permissions": [], "hooks": {}}, **extra)


def test_copy_directory_records_cleanup_and_preserves_modes_and_symlinks(world):
    state, tmp, dest = world
    b1 = make_bundle(tmp / "b1", {"app/bin/run": "#!/bin/sh\n", "app/conf/a.conf": "a"},
                     links={"app/current": "bin/run"}, modes={"app/bin/run": 0o750})
    res = hi.install(state, "d-AAAAAAAA1", spec(dest), b1)
    assert res.changed
    assert os.stat(os.path.join(dest, "bin/run")).st_mode & 0o777 == 0o750
    assert os.readlink(os.path.join(dest, "current")) == "bin/run"
    cleanup = hst.read_json(state.cleanup_file)
    assert cleanup["deployment_id"] == "d-AAAAAAAA1"
    assert cleanup["paths"][0] == dest  # the destination dir is created first (parents before children)
    assert set(cleanup["paths"]) == {dest, f"{dest}/bin", f"{dest}/bin/run", f"{dest}/conf", f"{dest}/conf/a.conf",
                                     f"{dest}/current"}
    assert hst.read_json(state.install_file)["status"] == "Succeeded"


def test_missing_ancestors_created_and_removed(world):
    state, tmp = world[0], world[1]
    deep = str(tmp / "x" / "y" / "z")
    b1 = make_bundle(tmp / "b1", {"one.txt": "1"})
    hi.install(state, "d-AAAAAAAA1", spec(deep, source="one.txt"), b1)
    assert open(os.path.join(deep, "one.txt")).read() == "1"
    b2 = make_bundle(tmp / "b2", {"two.txt": "2"})
    hi.install(state, "d-AAAAAAAA2", spec(str(tmp / "other"), source="two.txt"), b2)
    assert not os.path.exists(tmp / "x")  # v1's file and the three directories it created are gone


def test_cleanup_undo_then_copy_removes_files_dropped_from_revision(world):
    state, tmp, dest = world
    b1 = make_bundle(tmp / "b1", {"app/old.txt": "old", "app/keep.txt": "v1"})
    hi.install(state, "d-AAAAAAAA1", spec(dest), b1)
    b2 = make_bundle(tmp / "b2", {"app/keep.txt": "v2", "app/new.txt": "new"})
    res = hi.install(state, "d-AAAAAAAA2", spec(dest), b2)  # DISALLOW: v1's files do not count as existing
    assert not os.path.exists(os.path.join(dest, "old.txt"))
    assert open(os.path.join(dest, "keep.txt")).read() == "v2"
    assert os.path.join(dest, "old.txt") in res.removed


def test_disallow_stray_file_fails_naming_it(world):
    state, tmp, dest = world
    os.makedirs(dest)
    stray = os.path.join(dest, "index.html")
    open(stray, "w").write("stray")
    b1 = make_bundle(tmp / "b1", {"app/index.html": "new", "app/other": "x"})
    with pytest.raises(hst.InstallError) as err:
        hi.install(state, "d-AAAAAAAA1", spec(dest), b1)
    assert stray in str(err.value) and "DISALLOW" in str(err.value)
    assert open(stray).read() == "stray"
    assert not os.path.exists(os.path.join(dest, "other"))  # nothing copied


def test_overwrite_records_file_and_next_deployment_removes_it(world):
    state, tmp, dest = world
    os.makedirs(dest)
    stray = os.path.join(dest, "index.html")
    open(stray, "w").write("stray")
    b1 = make_bundle(tmp / "b1", {"app/index.html": "v1"})
    res = hi.install(state, "d-AAAAAAAA1", spec(dest), b1, file_exists_behavior="OVERWRITE")
    assert open(stray).read() == "v1" and res.overwritten == [stray]
    assert stray in hst.read_json(state.cleanup_file)["paths"]
    assert dest not in hst.read_json(state.cleanup_file)["paths"]  # existed before: not ours
    b2 = make_bundle(tmp / "b2", {"app/other.html": "v2"})
    hi.install(state, "d-AAAAAAAA2", spec(dest), b2)
    assert not os.path.exists(stray) and os.path.isdir(dest)


def test_overwrite_replaces_stray_symlink_without_writing_through(world):
    state, tmp, dest = world
    os.makedirs(dest)
    victim = tmp / "victim"
    victim.write_text("precious")
    os.symlink(str(victim), os.path.join(dest, "f"))
    b1 = make_bundle(tmp / "b1", {"app/f": "new"})
    hi.install(state, "d-AAAAAAAA1", spec(dest), b1, file_exists_behavior="OVERWRITE")
    assert victim.read_text() == "precious"
    assert not os.path.islink(os.path.join(dest, "f")) and open(os.path.join(dest, "f")).read() == "new"


def test_retain_keeps_file_does_not_record_it_nor_set_permissions(world):
    state, tmp, dest = world
    os.makedirs(dest)
    kept = os.path.join(dest, "config.ini")
    open(kept, "w").write("local")
    os.chmod(kept, 0o600)
    b1 = make_bundle(tmp / "b1", {"app/config.ini": "shipped", "app/new.txt": "n"})
    perms = [{"object": dest, "pattern": "**", "except": [], "mode": "0640", "type": ["file"]}]
    res = hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1, file_exists_behavior="RETAIN")
    assert open(kept).read() == "local" and res.retained == [kept]
    assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600  # pre-existing retained file keeps its mode
    assert stat.S_IMODE(os.stat(os.path.join(dest, "new.txt")).st_mode) == 0o640
    assert kept not in hst.read_json(state.cleanup_file)["paths"]
    b2 = make_bundle(tmp / "b2", {"app/x": "x"})
    hi.install(state, "d-AAAAAAAA2", spec(dest), b2)
    assert open(kept).read() == "local"  # never ours, so never cleaned up
    assert not os.path.exists(os.path.join(dest, "new.txt"))


def test_appspec_file_exists_behavior_overrides_deployment(world):
    state, tmp, dest = world
    os.makedirs(dest)
    open(os.path.join(dest, "a"), "w").write("stray")
    b1 = make_bundle(tmp / "b1", {"app/a": "new"})
    res = hi.install(state, "d-AAAAAAAA1", spec(dest, file_exists_behavior="OVERWRITE"), b1, file_exists_behavior="DISALLOW")
    assert res.file_exists_behavior == "OVERWRITE" and open(os.path.join(dest, "a")).read() == "new"


def test_permissions_pattern_except_type_and_object_itself(world):
    state, tmp, dest = world
    b1 = make_bundle(tmp / "b1", {"app/a.sh": "", "app/b.txt": "", "app/sub/c.sh": ""},
                     modes={"app/a.sh": 0o600, "app/b.txt": 0o600, "app/sub/c.sh": 0o600})
    perms = [
        {"object": dest, "pattern": "*.sh", "except": [], "mode": "0755", "type": ["file"]},
        {"object": f"{dest}/sub", "pattern": "**", "except": [], "mode": "0700", "type": ["file", "directory"]},
        {"object": dest, "pattern": "**", "except": ["sub"], "mode": "0750", "type": ["directory"]},
    ]
    hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)

    def mode(rel):
        return stat.S_IMODE(os.stat(os.path.join(dest, rel)).st_mode)
    assert mode("a.sh") == 0o755  # direct child matching *.sh
    assert mode("b.txt") == 0o600  # not matched
    assert mode("sub/c.sh") == 0o700  # simple globs never reach below a direct child; ** does
    assert mode("sub") != 0o750  # excepted; and the object itself is never matched (agent semantics)


def test_permissions_same_path_twice_is_an_error(world):
    state, tmp, dest = world
    b1 = make_bundle(tmp / "b1", {"app/a": ""})
    perms = [{"object": dest, "mode": "0644"}, {"object": f"{dest}/a", "mode": "0600"}]
    with pytest.raises(hst.InstallError, match="more than once"):
        hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)


def test_permissions_owner_group_and_acl(world):
    if os.geteuid() != 0 or not shutil.which("setfacl") or not shutil.which("getfacl"):
        pytest.skip("needs root and the acl tools")
    state, tmp, dest = world
    b1 = make_bundle(tmp / "b1", {"app/f": "x"})
    perms = [{"object": f"{dest}/f", "mode": "0640", "owner": "nobody", "group": "nogroup", "acls": ["u:daemon:rw"]}]
    res = hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)
    path = os.path.join(dest, "f")
    st = os.stat(path)
    import grp
    import pwd
    assert st.st_uid == pwd.getpwnam("nobody").pw_uid and st.st_gid == grp.getgrnam("nogroup").gr_gid
    acl = subprocess.run(["getfacl", "-cp", path], capture_output=True, text=True, check=True).stdout
    assert "user:daemon:rw-" in acl and "user::rw-" in acl
    if not hp.selinux_enabled():
        assert res.warnings == []


def test_context_without_selinux_warns(world):
    state, tmp, dest = world
    if hp.selinux_enabled():
        pytest.skip("SELinux is enabled here")
    b1 = make_bundle(tmp / "b1", {"app/f": "x"})
    perms = [{"object": f"{dest}/f", "context": {"user": None, "type": "httpd_sys_content_t", "range": None}}]
    res = hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)
    assert len(res.warnings) == 1 and "SELinux" in res.warnings[0]


def test_two_sources_same_destination_is_an_error(world):
    state, tmp, dest = world
    b1 = make_bundle(tmp / "b1", {"a/x": "1", "b/x": "2"})
    appspec = spec(dest)
    appspec["files"] = [{"source": "a", "destination": dest}, {"source": "b", "destination": dest}]
    with pytest.raises(hst.InstallError, match="same destination"):
        hi.install(state, "d-AAAAAAAA1", appspec, b1)


def test_idempotent_rerun_reports_unchanged_and_drift_reinstalls(world):
    state, tmp, dest = world
    b1 = make_bundle(tmp / "b1", {"app/a": "1", "app/d/b": "2"})
    perms = [{"object": dest, "mode": "0640", "type": ["file"]}]
    first = hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)
    assert first.changed
    before = {p: os.lstat(os.path.join(dest, p)).st_ino for p in ("a", "d/b")}
    again = hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)
    assert not again.changed and "unchanged" in again.message
    assert {p: os.lstat(os.path.join(dest, p)).st_ino for p in ("a", "d/b")} == before
    open(os.path.join(dest, "a"), "w").write("tampered")
    fixed = hi.install(state, "d-AAAAAAAA1", spec(dest, permissions=perms), b1)
    assert fixed.changed and open(os.path.join(dest, "a")).read() == "1"


def test_check_mode_changes_nothing_and_reports_plan(world):
    state, tmp, dest = world
    b1 = make_bundle(tmp / "b1", {"app/a": "1"})
    hi.install(state, "d-AAAAAAAA1", spec(dest), b1)
    b2 = make_bundle(tmp / "b2", {"app/a": "2", "app/b": "3"})
    res = hi.install(state, "d-AAAAAAAA2", spec(dest), b2, check_mode=True)
    assert res.changed and set(res.created) == {dest, f"{dest}/a", f"{dest}/b"}
    assert open(os.path.join(dest, "a")).read() == "1" and not os.path.exists(os.path.join(dest, "b"))
    assert hst.read_json(state.install_file)["deployment_id"] == "d-AAAAAAAA1"


def test_retention_keeps_last_successful_and_current(tmp_path):
    state = hst.HostState(str(tmp_path), "app", "dg")
    ids = [f"d-AAAAAAAA{i}" for i in range(1, 8)]
    for i, deployment_id in enumerate(ids):
        state.ensure_deployment_dir(deployment_id)
        hst.atomic_write(os.path.join(state.deployment_dir(deployment_id), ".created"), f"{1000 + i}\n")
    state.set_last_successful(ids[0])
    removed = state.prune(keep=3, current=ids[-1])
    assert state.list_deployments() == [ids[0], ids[5], ids[6]]
    assert removed == ids[1:5]
    with pytest.raises(hst.StateError):
        state.prune(keep=0)


def test_pointers_atomic_and_names_validated(tmp_path):
    state = hst.HostState(str(tmp_path), "app", "dg")
    assert state.last_successful is None and state.most_recent is None
    state.set_most_recent("d-AAAAAAAA1")
    assert state.most_recent == "d-AAAAAAAA1"
    assert [n for n in os.listdir(state.group_dir) if n.startswith(".")] == []  # no temp files left
    with pytest.raises(hst.StateError):
        hst.HostState(str(tmp_path), "../etc", "dg")


def test_acl_parsing_like_the_agent():
    assert hp.full_acl(["u:app:rwx"], 0o640) == ["user:app:rwx", "user::rw-", "group::r--", "other::---", "mask::r--"]
    assert hp.full_acl(["d:g:web:5"], 0o750)[0] == "default:group:web:r-x"
    with pytest.raises(hst.InstallError):
        hp.parse_ace("u::rwx")  # base entries come from mode
    with pytest.raises(hst.InstallError):
        hp.parse_ace("x:y:z:w:rwx")
