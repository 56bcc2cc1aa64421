# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of rollwright.deploy.host_lifecycle: push the bundle, then run the module, in one task.

When ``src`` is given and ``events`` include DownloadBundle, the controller-side bundle is transferred
once to the host's remote temporary directory (the SFTP/SCP of the connection Ansible already has), its
remote path is passed to the module as ``bundle``, the module runs once, and the temporary directory
is removed. In check mode nothing is transferred: the bundle's member names are read here and passed
as ``bundle_entries``, so the host's plan lists the exact files Install would touch.

While the module runs, a thread reads the tail of the deployment's scripts.log on the host (over the same
connection, a few times a minute) and prints a progress line for a hook that runs longer than
``progress_after`` seconds. With ``failure_handled``, a failed lifecycle event is returned as a result
with ``lifecycle_failed`` (not as a failed task): the deployment records and judges it.
"""

from __future__ import annotations

import base64
import os
import threading
import time

from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

from ansible_collections.rollwright.deploy.plugins.module_utils.host.staging import INLINE_BUNDLE_MAX
from ansible_collections.rollwright.deploy.plugins.module_utils.host.state import DEFAULT_STATE_ROOT
from ansible_collections.rollwright.deploy.plugins.plugin_utils.host_session import (
    handled_failure,
    running_script,
    scripts_log_path,
    tail_command,
)
from ansible_collections.rollwright.deploy.plugins.plugin_utils.step_action import documented_spec

MODULE = "rollwright.deploy.host_lifecycle"
_EXTENSIONS = (".tar.gz", ".tgz", ".zip", ".tar")
_PROGRESS_EVERY = 10.0


def _remote_name(src: str) -> str:
    lower = src.lower()
    for ext in _EXTENSIONS:
        if lower.endswith(ext):
            return "bundle" + ext
    return "bundle"


class _Progress:
    """Prints ``host: EVENT script running N s`` while the module runs longer than ``after`` seconds."""

    def __init__(self, action: "ActionModule", log_path: str, after: float):
        self.action, self.log_path, self.after = action, log_path, after
        self.host = getattr(action, "_host_name", None) or "host"
        self.started = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "_Progress":
        if self.after > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join(5)

    def _run(self) -> None:
        wait = self.after
        while not self.done.wait(wait):
            elapsed = time.monotonic() - self.started
            what = "lifecycle events running"
            try:
                out = self.action._low_level_execute_command(tail_command(self.log_path),
                                                             sudoable=True)
                current = running_script(to_text(out.get("stdout", "")))
                if current:
                    what = f"{current[0]} {current[1]} running"
            except Exception:  # pylint: disable=broad-except  # progress is best effort; the task goes on
                pass
            if self.done.is_set():
                return
            display.display(f"rollwright: {self.host}: {what} ({int(elapsed)} s)")
            wait = _PROGRESS_EVERY


def presigned_url(revision: dict, presign: dict) -> str:
    """A presigned GET URL for the exact S3 version of the revision (signed here, no AWS call; the host checks the
    download against the SHA-256 the controller computed when it verified that version)."""
    missing = [k for k in ("bucket", "key", "version", "sha256") if not revision.get(k)]
    if revision.get("source") != "s3" or missing:
        raise AnsibleActionFail("bundle_transfer=presigned needs an S3 revision with its bucket, key, version id and "
                                "sha256 (the exact version the controller verified); missing: "
                                + (", ".join(missing) or "source: s3"))
    from ansible_collections.rollwright.deploy.plugins.module_utils.aws.client import aws_client_factory

    options = {k: presign[k] for k in ("region", "endpoint_url", "profile") if presign.get(k)}
    options["aws_config"] = {"signature_version": "s3v4"}  # SigV4 query signing (SigV2 URLs are deprecated)
    where = f"s3://{revision['bucket']}/{revision['key']} version {revision['version']}"
    try:
        s3 = aws_client_factory(options).client("s3")
        return s3.generate_presigned_url("get_object", ExpiresIn=int(presign.get("expires") or 900), Params={
            "Bucket": revision["bucket"], "Key": revision["key"], "VersionId": revision["version"]})
    except Exception as exc:  # pylint: disable=broad-except  # any signing problem fails the task, naming the object
        raise AnsibleActionFail(f"bundle_transfer=presigned: cannot sign a URL for {where}: {to_text(exc)}") from None


class ActionModule(ActionBase):
    # A temporary directory only when a bundle is pushed (made below): with pipelining, every other call (an inline
    # bundle, a staged copy, a presigned URL, a session) runs without the three extra round trips that make and
    # remove it.
    TRANSFERS_FILES = False

    def _bundle_entries(self, src, args):
        """Check mode: the bundle's member names, read here, so the host plans the exact install without it."""
        from ansible_collections.rollwright.deploy.plugins.module_utils.revisions.revision import RevisionError, bundle_entries

        try:
            local = self._find_needle("files", src)
            revision = args.get("revision") or {}
            _top, entries = bundle_entries(local, revision.get("bundle_type"), revision.get("appspec_name") or "appspec.yml")
        except (AnsibleError, RevisionError, OSError) as exc:
            raise AnsibleActionFail(f"src: cannot read bundle {src} for the check-mode plan: {to_text(exc)}")
        return entries

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        # Refuse unknown and mistyped options on the controller, before any transfer (the module's own
        # validation would only run on the host, after the bundle was pushed).
        self.validate_argument_spec(argument_spec=documented_spec("host_lifecycle"))
        args = dict(self._task.args)
        src = args.pop("src", None)
        transfer = args.pop("bundle_transfer", None) or "push"
        presign = args.pop("presign", None) or {}
        handled = bool(args.pop("failure_handled", False))
        progress_after = float(args.pop("progress_after", 5) or 0)
        self._host_name = task_vars.get("inventory_hostname", "host")
        events = args.get("events") or []
        if isinstance(events, str):
            events = [e.strip() for e in events.split(",")]
        session = args.get("session") or {}
        for group in session.get("groups") or []:  # a session's later groups download too (the push is at its start)
            events = list(events) + list((group or {}).get("events") or [])
        if session:
            progress_after = 0  # the controller says what a session is doing
        downloads = "DownloadBundle" in events and args.get("staging") != "discard"
        try:
            if transfer == "presigned" and downloads and not self._task.check_mode:
                args["bundle_url"] = presigned_url(args.get("revision") or {}, presign)
            elif src and downloads and not self._task.check_mode:
                try:
                    local = self._find_needle("files", src)
                except AnsibleError as exc:
                    raise AnsibleActionFail(f"src: bundle {src} not found on the controller: {to_text(exc)}")
                if not os.path.isfile(local):
                    raise AnsibleActionFail(f"src: {local} is not a file (expected a zip, tar or tar.gz bundle)")
                if os.path.getsize(local) <= INLINE_BUNDLE_MAX:
                    with open(local, "rb") as bundle:  # in the module's arguments: no transfer, no temporary directory
                        args["bundle_content"] = base64.b64encode(bundle.read()).decode("ascii")
                elif session.get("detach"):
                    raise AnsibleActionFail(
                        f"session.detach: the bundle {src} is over {INLINE_BUNDLE_MAX} bytes, so it would be pushed "
                        "to a temporary directory that goes when this call returns, before the detached engine "
                        "installs it; stage it first (staging=stage) or run the session attached")
                else:
                    if self._connection._shell.tmpdir is None:
                        self._make_tmp_path()
                    remote = self._connection._shell.join_path(self._connection._shell.tmpdir, _remote_name(local))
                    self._transfer_file(local, remote)
                    self._fixup_perms2((self._connection._shell.tmpdir, remote))
                    args["bundle"] = remote
            elif src and self._task.check_mode and "bundle_entries" not in args:
                args["bundle_entries"] = self._bundle_entries(src, args)
            with _Progress(self, self._log_path(args), 0 if self._task.check_mode else progress_after):
                result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        except AnsibleActionFail as exc:
            result.update(exc.result)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if handled:
            # A lifecycle event failed and the deployment handles it (records it, keeps the host out of its
            # load balancer, judges the minimum): say so, without a failed task and an "...ignoring".
            result.update(handled_failure(result, self._host_name, lambda line: display.display(f"rollwright: {line}")))
        return result

    @staticmethod
    def _log_path(args: dict) -> str:
        return scripts_log_path(args, DEFAULT_STATE_ROOT)
