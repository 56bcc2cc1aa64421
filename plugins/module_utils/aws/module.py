# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's AWS module base: amazon.aws's AnsibleAWSModule with our clients (aws/client.py)."""

from __future__ import annotations

from typing import Any, Callable

from ansible_collections.amazon.aws.plugins.module_utils.common import set_collection_info
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.aws.client import (
    COLLECTION_NAME,
    COLLECTION_VERSION,
    ModuleClientFactory,
)
from ansible_collections.rollwright.deploy.plugins.module_utils.errors import RollwrightError, is_aws_error


class RollwrightAWSModule(AnsibleAWSModule):
    """AnsibleAWSModule whose clients are the collection's: standard retries, our user agent and Config."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        set_collection_info(collection_name=COLLECTION_NAME, collection_version=COLLECTION_VERSION)
        self.clients = ModuleClientFactory(self)

    def aws_client(self, service: str):
        """A boto3 client whose calls botocore retries (throttling, transient errors) with backoff."""
        return self.clients.client(service)

    def run_or_fail(self, what: str, work: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``work(*args, **kwargs)``, the one error boundary of a module's main().

        A collection error fails the task with its message (plus the fields its ``failure_fields()``
        gives, when it has one); a botocore error fails with ``what`` and AWS's details; anything else
        is a bug and stays a traceback.
        """
        failure = None
        try:
            return work(*args, **kwargs)
        except RollwrightError as exc:
            fields = getattr(exc, "failure_fields", None)
            failure = dict(fields() if fields else {}, msg=str(exc))
        except Exception as exc:
            if not is_aws_error(exc):
                raise
            self.fail_json_aws(exc, msg=what)
        # outside the except block: a known error is a plain failure, not a traceback
        self.fail_json(**failure)
