#!/usr/bin/env bash
# Installs the Debian packages the tests need when they are missing: redis-server (Redis store tests),
# chromium (browser tests), lame (the emulator's MP3 recordings), nginx (the production proxy,
# deploy/nginx.conf, tested in front of gunicorn) and Debian's python3.11 with venv (the image's steps run as an
# unprivileged user, tests/test_container.py, need an interpreter outside any home directory).
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v lame >/dev/null || missing+=(lame)
# Debian installs nginx in /usr/sbin, outside a non-root PATH.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
/usr/bin/python3.11 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3.11-venv)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}. Run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
