#!/usr/bin/env bash
# Install what the test suite needs on Debian: the reference servers and DNS tools
# the tests run against (Knot, NSD, BIND's dig and verifiers, unbound, dnsperf),
# and this package with its test extras in .venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(knot knot-dnsutils nsd bind9-dnsutils bind9-utils ldnsutils unbound dnsperf)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
