# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's AWS module base: amazon.aws's AnsibleAWSModule with our clients (aws_session.py)."""

from __future__ import annotations

from ansible_collections.amazon.aws.plugins.module_utils.common import set_collection_info
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.rollwright.deploy.plugins.module_utils.aws_session import (
    COLLECTION_NAME,
    COLLECTION_VERSION,
    ModuleClientFactory,
)


class RollwrightAWSModule(AnsibleAWSModule):
    """AnsibleAWSModule whose clients are the collection's: standard retries, our user agent and Config."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        set_collection_info(collection_name=COLLECTION_NAME, collection_version=COLLECTION_VERSION)
        self.clients = ModuleClientFactory(self)

    def aws_client(self, service: str):
        """A boto3 client whose calls botocore retries (throttling, transient errors) with backoff."""
        return self.clients.client(service)
