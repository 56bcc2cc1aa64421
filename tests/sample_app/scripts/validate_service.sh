#!/bin/sh
# The service must answer with this revision's version. /srv/fail-validate makes it fail (tests).
if [ -f /srv/fail-validate ]; then
  echo "validation failed on purpose: /srv/fail-validate exists" >&2
  exit 3
fi
expected="sample-app $(cat "$(dirname "$0")/../REVISION")"
for _attempt in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  body=$(python3 -c 'import urllib.request;print(urllib.request.urlopen("http://127.0.0.1:8080/", timeout=2).read().decode().strip())' 2>/dev/null)
  if [ "$body" = "$expected" ]; then
    echo "service answers: $body"
    exit 0
  fi
  sleep 0.25
done
echo "service did not answer '$expected' (last answer: '$body')" >&2
exit 1
