"""Stand-in for the pip bootstrap script that ansible-test downloads from a host we cannot reach.

ansible-test runs this file with the pip arguments that PyPA's get-pip.py takes
(options and requirement specifiers). We bootstrap pip from the interpreter's own
ensurepip wheel, then let that pip install the requested versions from the package index.
"""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap(upgrade=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
# ansible-test runs pip with a scrubbed configuration: keep the machine's CA bundle (a TLS-intercepting registry proxy needs it).
for bundle in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
    if bundle and os.path.exists(bundle):
        args = ["--cert", bundle, *args]
        break
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args]))
