#!/usr/bin/python3
"""STAND-IN for a Weka backend's client distribution endpoint (no Weka cluster exists here).

A small HTTP server, as a backend serves on its API port (14000):
- `GET /dist/v1/install` returns an install script. The script installs a stand-in `weka` CLI
  (reporting VERSION), a `weka-agent` binary that only sleeps, its systemd unit, and
  /etc/wekaio/service.conf with `cgroups_mode=auto`, as the real installer lays them out.
- `GET /standin/requests` returns how many times each path was fetched, so tests can prove
  the client was installed exactly once.

The stand-in `weka` CLI models `weka version current`, `weka user login USER --org ORG` with the
password on stdin, as weka reads it when it is not an argument (refused without one; writes
~/.weka/auth-token.json, 0600), `weka local ps` and `weka local setup container` (recorded in
/var/lib/standin-weka/containers). It appends each call's arguments to /var/lib/standin-weka/argv,
so tests can prove no secret was on a command line.

`--install-sha256` prints the sha256 of the install script served for `--version`, for tests to
pin as an inventory pins the real one.

It does not model: the Weka cluster API, filesystems, mounting (the wekafs kernel module and
mount helper are absent, so tests write fstab entries without mounting), authentication
checks, HTTPS on 14003, or any other CLI command.

Run: weka_backend.py --port 14000 --version 4.4.2 [--bind 127.0.0.1] [--install-sha256]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INSTALL_SCRIPT = r"""#!/bin/sh
# STAND-IN Weka client installer, served by tests/standins/weka_backend.py.
set -eu
mkdir -p /etc/wekaio /var/lib/standin-weka
cat > /usr/bin/weka <<'CLI'
#!/bin/sh
# STAND-IN weka CLI (tests/standins/weka_backend.py).
set -eu
echo "$*" >> /var/lib/standin-weka/argv
case "$*" in
  "version current") echo "@VERSION@" ;;
  "local ps")
    echo "CONTAINER  STATE"
    if [ -f /var/lib/standin-weka/containers ]; then
      sed 's/$/  Running/' /var/lib/standin-weka/containers
    fi ;;
  "local setup container"*)
    shift 3
    while [ $# -gt 0 ]; do
      if [ "$1" = "--name" ]; then echo "$2" >> /var/lib/standin-weka/containers; fi
      shift
    done ;;
  "user login"*)
    password=""
    read -r password || true
    if [ -z "$password" ]; then echo "stand-in weka: no password on stdin" >&2; exit 2; fi
    umask 077
    mkdir -p "$HOME/.weka"
    printf '{"access_token": "stand-in", "org": "%s"}\n' "$5" > "$HOME/.weka/auth-token.json" ;;
  *) echo "stand-in weka: '$*' is not modelled" >&2; exit 2 ;;
esac
CLI
chmod 755 /usr/bin/weka
printf '#!/bin/sh\nexec sleep infinity\n' > /usr/bin/weka-agent
chmod 755 /usr/bin/weka-agent
cat > /etc/systemd/system/weka-agent.service <<'UNIT'
[Unit]
Description=STAND-IN Weka agent

[Service]
ExecStart=/usr/bin/weka-agent

[Install]
WantedBy=multi-user.target
UNIT
cat > /etc/wekaio/service.conf <<'CONF'
# STAND-IN Weka service configuration
isolate_cpusets=false
cgroups_mode=auto
CONF
systemctl daemon-reload
"""


def install_script(version: str) -> bytes:
    return INSTALL_SCRIPT.replace("@VERSION@", version).encode()


def make_handler(version: str, counts: Counter[str]) -> type[BaseHTTPRequestHandler]:
    script = install_script(version)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            counts[self.path] += 1
            if self.path == "/dist/v1/install":
                self._reply(200, "text/x-shellscript", script)
            elif self.path == "/standin/requests":
                self._reply(200, "application/json", json.dumps(counts).encode())
            else:
                self._reply(404, "text/plain", b"not found\n")

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=14000)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--version", default="4.4.2")
    parser.add_argument("--install-sha256", action="store_true", help="print the script's sha256 and exit")
    args = parser.parse_args()
    if args.install_sha256:
        print(hashlib.sha256(install_script(args.version)).hexdigest())
        return
    server = ThreadingHTTPServer((args.bind, args.port), make_handler(args.version, Counter()))
    server.serve_forever()


if __name__ == "__main__":
    main()
