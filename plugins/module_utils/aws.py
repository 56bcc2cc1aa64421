# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's AWS module base: amazon.aws's AnsibleAWSModule with our user agent."""

from __future__ import annotations

from ansible_collections.amazon.aws.plugins.module_utils.common import set_collection_info
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

COLLECTION_NAME = "rollwright.deploy"
COLLECTION_VERSION = "0.1.0"


class RollwrightAWSModule(AnsibleAWSModule):
    """AnsibleAWSModule that identifies this collection in the boto3 user agent."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        set_collection_info(collection_name=COLLECTION_NAME, collection_version=COLLECTION_VERSION)

    def retrying_client(self, service: str):
        """A boto3 client whose calls retry throttling and transient errors with jittered backoff."""
        return self.client(service, retry_decorator=AWSRetry.jittered_backoff())

    def aws_client(self, service: str):
        """The client the modules use (the name the collection's other AWS modules call it by)."""
        return self.retrying_client(service)
