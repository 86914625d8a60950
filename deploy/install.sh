#!/usr/bin/env bash
# Installs crm-service on a Debian 12 host (run as root), or into a scratch root for tests and
# container builds. Idempotent: a second run changes nothing (files are compared before they
# are copied; nothing written contains a timestamp), and an existing
# /etc/crm-service/crm-service.env is never touched: it holds your secrets.
#
#   deploy/install.sh [--root DIR] [--binary PATH] [--no-build] [--no-systemctl]
#                     [--socket-activation] [--keep-default-site]
#
#   --root DIR            install under DIR instead of / (implies --no-systemctl; no user or
#                         group is created and file owners are left alone)
#   --binary PATH         the crm-service executable (default: .build/release/crm-service of
#                         this repository, built with `swift build -c release
#                         --static-swift-stdlib` if missing)
#   --no-build            never build; fail when the binary is missing
#   --no-systemctl        do not run systemctl or reload nginx (e.g. in a container build)
#   --socket-activation   enable crm-service.socket + crm-service-socket.service instead of
#                         crm-service.service (deploy/README.md explains the choice)
#   --keep-default-site   leave Debian's "default" nginx site enabled (by default its symlink
#                         in sites-enabled is removed: this site is the default server on :80)
#
# What goes where (below DIR):
#   /usr/local/bin/crm-service                          0755  the worker
#   /etc/systemd/system/crm-service*.service|.socket    0644  the units
#   /etc/nginx/sites-available/crm-service.conf         0644  + symlink in sites-enabled/ (an
#                                                             edited site is kept: see below)
#   /etc/crm-service/crm-service.env                    0640 root:crm-service, only if absent
#   /usr/local/share/crm-service/                       0644  this version's env example and site
#   /var/lib/crm-service/                               0750 crm-service:crm-service
set -euo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DEPLOY/.." && pwd)"
DEFAULT_BINARY="$REPO/.build/release/crm-service"

ROOT=/
BINARY=""
BUILD=1
SYSTEMCTL=1
SOCKET_ACTIVATION=0
KEEP_DEFAULT_SITE=0

log() { echo "install.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; BINARY="$2"; shift 2 ;;
        --binary=*) BINARY="${1#*=}"; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        --socket-activation) SOCKET_ACTIVATION=1; shift ;;
        --keep-default-site) KEEP_DEFAULT_SITE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# --- where ------------------------------------------------------------------------------
[ -n "$ROOT" ] || die "--root must not be empty"
if [ "$ROOT" != / ]; then
    mkdir -p -- "$ROOT"
    ROOT="$(cd -- "$ROOT" && pwd -P)"
fi
if [ "$ROOT" = / ]; then
    P=""            # prefix for paths: "" for the real root
    REAL_ROOT=1
    [ "$(id -u)" -eq 0 ] || die "installing into / needs root (or use --root DIR)"
else
    P="$ROOT"
    REAL_ROOT=0
    SYSTEMCTL=0
fi

# --- the binary --------------------------------------------------------------------------
if [ -z "$BINARY" ]; then
    BINARY="$DEFAULT_BINARY"
    if [ ! -f "$BINARY" ]; then
        [ "$BUILD" = 1 ] || die "$BINARY does not exist (build it, or drop --no-build)"
        command -v swift >/dev/null || die "$BINARY does not exist and swift is not installed"
        # Static Swift runtime: the host needs only Debian's libraries, not the toolchain.
        log "building the release binary (swift build -c release --static-swift-stdlib)"
        (cd "$REPO" && swift build -c release --static-swift-stdlib)
    fi
fi
[ -f "$BINARY" ] || die "binary not found: $BINARY"

# An ELF binary that links the Swift runtime dynamically runs only where that toolchain is
# installed (its RUNPATH): say so, and refuse one whose libraries are missing on this host.
if [ "$(head -c 4 "$BINARY" | od -An -c | tr -d ' ')" = '177ELF' ] && command -v readelf >/dev/null; then
    if readelf -d "$BINARY" 2>/dev/null | grep -q 'libswiftCore\.so'; then
        log "note: $BINARY links the Swift runtime dynamically; hosts without the same Swift"
        log "      toolchain need a build with: swift build -c release --static-swift-stdlib"
    fi
    if [ "$REAL_ROOT" = 1 ] && command -v ldd >/dev/null; then
        missing_libs="$(ldd "$BINARY" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')"
        [ -z "$missing_libs" ] || die "$BINARY needs libraries missing here: $missing_libs(apt-get install libfcgi0ldbl libpq5 libcurl4 libssl3)"
    fi
fi

# --- users -------------------------------------------------------------------------------
if [ "$REAL_ROOT" = 1 ]; then
    if ! getent group crm-service >/dev/null; then
        groupadd --system crm-service
        log "created group crm-service"
    fi
    if ! getent passwd crm-service >/dev/null; then
        useradd --system --gid crm-service --home-dir /var/lib/crm-service --no-create-home \
            --shell /usr/sbin/nologin --comment "crm-service worker" crm-service
        log "created user crm-service"
    fi
    if [ "$SOCKET_ACTIVATION" = 1 ] && ! getent group www-data >/dev/null; then
        die "group www-data (nginx's) does not exist: crm-service.socket needs it"
    fi
fi

# --- files -------------------------------------------------------------------------------
# put MODE OWNER:GROUP SRC DEST: copy unless DEST already has the same bytes, mode and owner.
# Owners apply only to the real root.
put() {
    local mode="$1" owner="$2" src="$3" dest="$4"
    local -a own=()
    [ "$REAL_ROOT" = 1 ] && own=(-o "${owner%%:*}" -g "${owner##*:}")
    mkdir -p -- "$(dirname -- "$dest")"
    if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s -- "$src" "$dest" \
        && [ "$(stat -c '%a' -- "$dest")" = "${mode#0}" ] \
        && { [ "$REAL_ROOT" = 0 ] || [ "$(stat -c '%U:%G' -- "$dest")" = "$owner" ]; }; then
        return 0
    fi
    [ -L "$dest" ] && rm -f -- "$dest"
    install -C -m "$mode" "${own[@]}" -- "$src" "$dest"
    log "installed ${dest}"
}

# dir MODE OWNER:GROUP PATH: create (or fix the mode and owner of) one of our own directories.
dir() {
    local mode="$1" owner="$2" path="$3"
    local -a own=()
    [ "$REAL_ROOT" = 1 ] && own=(-o "${owner%%:*}" -g "${owner##*:}")
    install -d -m "$mode" "${own[@]}" -- "$path"
}

put 0755 root:root "$BINARY" "$P/usr/local/bin/crm-service"

for unit in crm-service.service crm-service.socket crm-service-socket.service \
            crm-service-migrate.service crm-service@.service; do
    put 0644 root:root "$DEPLOY/systemd/$unit" "$P/etc/systemd/system/$unit"
done

# The site is a configuration file people edit (more upstream servers, allow lines, TLS):
# like dpkg's conffiles, an edited site is kept and the new version goes beside it as
# crm-service.conf.new (not enabled). "Edited" = differs from the copy this script installed
# last, kept in /usr/local/share/crm-service/.
site_src="$DEPLOY/nginx/crm-service.conf"
site="$P/etc/nginx/sites-available/crm-service.conf"
site_pristine="$P/usr/local/share/crm-service/crm-service.conf"
if [ -f "$site" ] && ! cmp -s -- "$site" "$site_src" \
    && { [ ! -f "$site_pristine" ] || ! cmp -s -- "$site" "$site_pristine"; }; then
    put 0644 root:root "$site_src" "$site.new"
    log "kept your edited $site; this version's site is $site.new: merge what you need, then delete it"
else
    put 0644 root:root "$site_src" "$site"
    if [ -e "$site.new" ]; then rm -f -- "$site.new"; log "removed $site.new"; fi
fi
put 0644 root:root "$site_src" "$site_pristine"
mkdir -p -- "$P/etc/nginx/sites-enabled"
link="$P/etc/nginx/sites-enabled/crm-service.conf"
target=/etc/nginx/sites-available/crm-service.conf
if [ "$(readlink -- "$link" 2>/dev/null || true)" != "$target" ]; then
    ln -sfn -- "$target" "$link"
    log "enabled the nginx site ($link -> $target)"
fi
# Debian's welcome site is also "listen 80 default_server": two default servers fail nginx -t.
if [ "$KEEP_DEFAULT_SITE" = 0 ] && [ -L "$P/etc/nginx/sites-enabled/default" ]; then
    rm -f -- "$P/etc/nginx/sites-enabled/default"
    log "disabled Debian's default nginx site (re-enable: ln -s /etc/nginx/sites-available/default /etc/nginx/sites-enabled/)"
fi

put 0644 root:root "$DEPLOY/crm-service.env.example" "$P/usr/local/share/crm-service/crm-service.env.example"

dir 0750 root:crm-service "$P/etc/crm-service"
envfile="$P/etc/crm-service/crm-service.env"
new_envfile=0
if [ -e "$envfile" ] || [ -L "$envfile" ]; then
    if [ -n "$(find "$envfile" -maxdepth 0 -perm /o=rwx 2>/dev/null)" ]; then
        log "warning: $envfile is readable by everyone; it holds secrets: chmod 0640 $envfile"
    fi
else
    put 0640 root:crm-service "$DEPLOY/crm-service.env.example" "$envfile"
    new_envfile=1
fi

dir 0750 crm-service:crm-service "$P/var/lib/crm-service"

# --- services ----------------------------------------------------------------------------
if [ "$SYSTEMCTL" = 0 ]; then
    log "done (files only: no systemctl, no nginx reload)"
    exit 0
fi
if ! command -v systemctl >/dev/null || [ ! -d /run/systemd/system ]; then
    log "systemd is not running here: units installed but not enabled; nginx not reloaded"
    exit 0
fi

systemctl daemon-reload
if [ "$SOCKET_ACTIVATION" = 1 ]; then
    systemctl disable --now --quiet crm-service.service 2>/dev/null || true
    systemctl enable --quiet crm-service.socket crm-service-socket.service
    main_unit=crm-service-socket.service
else
    systemctl disable --now --quiet crm-service-socket.service crm-service.socket 2>/dev/null || true
    systemctl enable --quiet crm-service.service
    main_unit=crm-service.service
fi

if [ "$new_envfile" = 1 ]; then
    log "created /etc/crm-service/crm-service.env from the example: set DB_DSN and CRM_ENCRYPTION_KEY"
    log "(openssl rand -hex 16) there, then: systemctl start $main_unit"
else
    # Restarting runs crm-service-migrate.service first (Wants= + After=).
    if ! systemctl restart "$main_unit"; then
        log "$main_unit did not start; see: journalctl -u crm-service-migrate -u $main_unit -n 50"
        exit 1
    fi
    log "restarted $main_unit"
fi

if command -v nginx >/dev/null; then
    if nginx -t -q; then
        systemctl reload-or-restart nginx
        log "reloaded nginx"
    else
        die "nginx -t failed (see above); nginx was not reloaded"
    fi
else
    log "warning: nginx is not installed (apt-get install nginx), the site is in place for it"
fi
log "done"
