#!/bin/sh
# Start the server in the background; it keeps running after the hook returns.
PIDFILE=/var/log/rollwright/sample-app.pid
mkdir -p /var/log/rollwright
python3 /opt/app/sample/bin/server.py >> /var/log/rollwright/sample-app.log 2>&1 &
echo $! > "$PIDFILE"
