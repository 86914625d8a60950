#!/usr/bin/env bash
# Installs what building, running and testing crm-service needs, and nothing when it is all
# there already (checked with dpkg-query and a Python import: a warm machine never hits apt
# or PyPI). Safe to run any number of times; CI runs it on a fresh machine.
# Extra Debian packages may be named as arguments (bench/run.sh adds its own this way).
set -euo pipefail

APT_PACKAGES=(
    libfcgi-dev libpq-dev libcurl4-openssl-dev libssl-dev pkg-config
    nginx postgresql postgresql-contrib chromium procps curl
    systemd openssl
    "$@"
)
PIP_PACKAGES=(pytest openapi-spec-validator)
PIP_MODULES=(pytest openapi_spec_validator)

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

missing=()
for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done

if [ "${#missing[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "deps.sh: missing ${missing[*]}; run as root to install" >&2; exit 1; }
    echo "deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Debian's nginx and postgresql packages start their system services on install where
    # an init system lets them. Nothing here uses those (make run and the tests start their
    # own private instances by PID), so forbid service starts while we install.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        own_policy=1
    fi
    cleanup_policy() { [ "$own_policy" = 1 ] && rm -f "$policy"; own_policy=0; }
    trap cleanup_policy EXIT
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
    cleanup_policy
    trap - EXIT
fi

have_modules() { # find_spec locates the modules without importing them: cheap
    python3 -c 'import importlib.util as u, sys; sys.exit(0 if all(u.find_spec(m) for m in sys.argv[1:]) else 1)' \
        "${PIP_MODULES[@]}"
}

if ! have_modules; then
    echo "deps.sh: installing ${PIP_PACKAGES[*]} from PyPI"
    pip_flags=(--quiet --disable-pip-version-check --root-user-action=ignore)
    if ! python3 -m pip install "${pip_flags[@]}" "${PIP_PACKAGES[@]}"; then
        # A Debian-managed python3 refuses plain installs (PEP 668).
        python3 -m pip install "${pip_flags[@]}" --break-system-packages "${PIP_PACKAGES[@]}"
    fi
    have_modules || { echo "deps.sh: ${PIP_MODULES[*]} still not importable" >&2; exit 1; }
fi
