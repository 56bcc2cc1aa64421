# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redaction of common secret shapes in hook output and hook payloads (stdlib only: hosts use it too).

One function for every place that keeps or returns text a hook produced: the host engine (script
output returned to the controller), the controller (events, messages and Lambda hook payloads
written to deployment records and summaries). It is a safety net for what applications print by
mistake, not a guarantee: a secret printed in a shape below is masked, any other shape is not.

Masked:

- ``KEY=value`` / ``KEY: value`` / ``"KEY": "value"`` where KEY contains PASSWORD, PASSWD, SECRET,
  TOKEN, CREDENTIAL, PRIVATE_KEY or API_KEY (any case, ``_``/``-``/``.`` around it) - the value;
- AWS access key ids (``AKIA``/``ASIA`` + 16 upper-case letters or digits);
- a 40-character AWS secret access key right after ``aws_secret_access_key`` (any separator), and any
  40-character word of that shape (upper and lower case and a digit);
- ``Authorization: Bearer ...`` / ``Basic ...`` header values;
- PEM private key blocks.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "[REDACTED]"

_KEY_WORDS = r"(?:PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|PRIVATE[_-]?KEY|API[_-]?KEY|ACCESS[_-]?KEY[_-]?ID)"
# KEY=value, KEY: value, "KEY": "value", --key=value; the value stops at whitespace, a quote, comma or ;
_ASSIGNMENT = re.compile(
    r"(?P<key>[\"']?[A-Za-z0-9_.\-]*" + _KEY_WORDS + r"[A-Za-z0-9_.\-]*[\"']?)"
    r"(?P<sep>\s*[=:]\s*)"
    r"(?P<value>" + re.escape(MASK) + r"|\"[^\"\n]*\"?|'[^'\n]*'?|[^\s\"',;&}\]]+)",
    re.IGNORECASE,
)
_AWS_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")
# a 40-character base64 word with upper case, lower case and a digit: the shape of an AWS secret access key
# (lower-case hex digests such as git or sha1 ids have no upper case and are left alone)
_SECRET_SHAPED = re.compile(r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]*[A-Z])(?=[A-Za-z0-9/+]*[a-z])(?=[A-Za-z0-9/+]*[0-9])"
                            r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_SECRET = re.compile(r"(aws_?secret_?access_?key[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9/+=]{40}", re.IGNORECASE)
_AUTH_HEADER = re.compile(r"(Authorization\s*:\s*(?:Bearer|Basic|Token)\s+)\S+", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.DOTALL)


def _mask_assignment(match: "re.Match[str]") -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    if value.strip(quote) == MASK:
        return match.group(0)
    return f"{match.group('key')}{match.group('sep')}{quote}{MASK}{quote}"


def redact_text(text: Any) -> Any:
    """``text`` with every secret shape above masked; anything that is not a string is returned as is."""
    if not isinstance(text, str) or not text:
        return text
    out = _PEM.sub("-----BEGIN PRIVATE KEY----- " + MASK + " -----END PRIVATE KEY-----", text)
    out = _AWS_SECRET.sub(lambda m: m.group(1) + MASK, out)
    out = _AUTH_HEADER.sub(lambda m: m.group(1) + MASK, out)
    out = _ASSIGNMENT.sub(_mask_assignment, out)
    out = _AWS_ACCESS_KEY_ID.sub(MASK, out)
    return _SECRET_SHAPED.sub(MASK, out)


_SECRET_KEY = re.compile(_KEY_WORDS, re.IGNORECASE)


def redact_value(value: Any) -> Any:
    """A copy of plain JSON data with every string redacted, and the value of every dict key that
    names a secret (``db_password``, ``SessionToken``, ...) masked whole."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and _SECRET_KEY.search(key) and isinstance(item, (str, int, float)) \
                    and not isinstance(item, bool) and item not in ("", None):
                out[key] = MASK
            else:
                out[key] = redact_value(item)
        return out
    return value
