#!/bin/sh
# Appends "<event> <deployment id> <revision>" so tests can check the event order and environment.
mkdir -p /var/log/rollwright
echo "$LIFECYCLE_EVENT $DEPLOYMENT_ID $(cat "$(dirname "$0")/../REVISION" 2>/dev/null || echo unknown) $APPLICATION_NAME $DEPLOYMENT_GROUP_NAME ${BUNDLE_KEY:-} $(id -un)" >> /var/log/rollwright/events.log
