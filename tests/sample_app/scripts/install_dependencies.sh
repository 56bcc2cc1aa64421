#!/bin/sh
mkdir -p /opt/app
