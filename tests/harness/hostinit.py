# -*- coding: utf-8 -*-
# Copyright: rollwright.deploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PID 1 of a fleet host (stdlib only; run by the system python inside the host's namespaces).

Started as ``ip netns exec NS unshare --mount --propagation private --uts --pid --fork --mount-proc
/usr/bin/python3 -I hostinit.py CONFIG.json``. It sets the hostname, mounts a private tmpfs over
each private directory, a private /etc/hosts and plain root dotfiles, starts sshd, then reaps orphans for ever.
Signals (sent from the root namespace by PID): SIGTERM ends the host (the kernel then kills every
process in its PID namespace); SIGUSR1 starts sshd again if it is not running.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time


def main():
    with open(sys.argv[1]) as fh:
        cfg = json.load(fh)
    socket.sethostname(cfg["name"])
    for path in cfg["private_dirs"]:
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=512m", "rw-" + cfg["name"], path], check=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    os.makedirs("/run/lock", mode=0o1777, exist_ok=True)
    if cfg.get("hosts_file"):
        subprocess.run(["mount", "--bind", cfg["hosts_file"], "/etc/hosts"], check=True)
    # The controller's root dotfiles (pyenv, cargo, ...) are not the host's: give root plain ones.
    for target, source in cfg.get("dotfiles", {}).items():
        if os.path.isfile(target):
            subprocess.run(["mount", "--bind", source, target], check=True)

    state = {"sshd": None}

    def start_sshd():
        if state["sshd"] is None or state["sshd"].poll() is not None:
            state["sshd"] = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", cfg["sshd_config"]])

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda s, f: start_sshd())
    start_sshd()
    sys.stdout.write("host %s up\n" % cfg["name"])
    sys.stdout.flush()
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.2)


if __name__ == "__main__":
    main()
