#!/bin/sh
# Stop the server started by start_server.sh (by pid file: never pkill by pattern).
PIDFILE=/var/log/rollwright/sample-app.pid
if [ -f "$PIDFILE" ]; then
  kill "$(cat "$PIDFILE")" 2>/dev/null || true
  rm -f "$PIDFILE"
fi
exit 0
