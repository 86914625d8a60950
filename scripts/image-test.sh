#!/usr/bin/env bash
# `make image-test`: builds two images and runs tests/image against them. Not part of `make
# test` (CI machines have no container engine; this needs root and takes a few minutes).
#   - the Cloud Run image (deploy/cloudrun/Dockerfile), built as its header says:
#     tests/image/test_image.py runs its container, nginx and worker, with the private
#     PostgreSQL and the fake CRMs on the host's loopback;
#   - a Debian 12 host with systemd as PID 1 (tests/image/host.Dockerfile: PostgreSQL, nginx,
#     crm-service installed by deploy/install.sh): tests/image/test_host.py runs the systemd
#     units in it, hardening and all.
#
# The Docker engine: the one `docker info` reaches, if any; otherwise Debian's docker.io is
# installed and a private dockerd is started here (its own data root under .run/image, no
# bridge, no iptables rules: builds and containers use the host's network) and stopped by PID
# at the end.
#
# The base image: debian:12-slim, pulled when the engine has none. Where no registry can be
# reached (this project's machines), a stand-in is built with debootstrap (--variant=minbase)
# from the host's Debian mirror and tagged debian:12-slim: the same Debian 12 packages, without
# the official image's trimming of docs and locales. It is kept for later runs.
#
# The private PostgreSQL's port is the one `make test` and `make bench` use: run one at a time.
#
# Environment: IMAGE (default crm-service:image-test), HOST_IMAGE (default
# crm-service-host:image-test), IMAGE_SKIP_BUILD=1 (use .build/release/crm-service as it is),
# PYTEST_ARGS.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
RUN="$REPO/.run/image"
IMAGE="${IMAGE:-crm-service:image-test}"
HOST_IMAGE="${HOST_IMAGE:-crm-service-host:image-test}"
BASE=debian:12-slim
export PYTHONDONTWRITEBYTECODE=1

say() { echo "image-test: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "needs root (a Docker engine, debootstrap)"; exit 1; }
install -d -m 0755 "$RUN"

started_pg=0 dockerd_pid=
# A short exec root for a private dockerd: containerd's sockets live there, and unix socket
# paths are short.
exec_root=/run/crm-image-test
cleanup() {
    if [ -n "$dockerd_pid" ]; then
        if kill -0 "$dockerd_pid" 2>/dev/null; then
            say "stopping dockerd (pid $dockerd_pid)"
            kill -TERM "$dockerd_pid"
            for _ in $(seq 1 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$dockerd_pid" 2>/dev/null || true
        fi
        # The engine leaves a network namespace mounted under its exec root.
        awk -v root="$exec_root/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r \
            | while read -r m; do umount "$m" || true; done
        rm -rf "$exec_root" || true
    fi
    if [ "$started_pg" = 1 ]; then scripts/pg.sh stop >&2 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# docker.io brings the client and the engine: needed unless both are here (or an engine answers).
packages=()
{ command -v docker && { docker info || command -v dockerd; }; } >/dev/null 2>&1 || packages+=(docker.io)
command -v debootstrap >/dev/null || packages+=(debootstrap)
scripts/deps.sh "${packages[@]}" >&2

if ! docker info >/dev/null 2>&1; then
    install -d -m 0700 "$RUN/docker" "$exec_root"
    export DOCKER_HOST="unix://$exec_root/docker.sock"
    say "starting a private dockerd (log: $RUN/dockerd.log)"
    dockerd --data-root "$RUN/docker" --exec-root "$exec_root" --pidfile "$exec_root/dockerd.pid" \
        --host "$DOCKER_HOST" --bridge none --iptables=false --ip-masq=false \
        >"$RUN/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 300); do
        docker info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$RUN/dockerd.log" >&2; say "dockerd exited"; exit 1; }
        sleep 0.1
    done
    docker info >/dev/null 2>&1 || { tail -20 "$RUN/dockerd.log" >&2; say "dockerd did not answer in 30 s"; exit 1; }
fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if timeout 60 docker pull "$BASE" >&2; then
        :
    else
        say "no registry: building $BASE from the Debian mirror with debootstrap"
        rootfs="$RUN/rootfs"
        rm -rf "$rootfs"
        mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
        debootstrap --variant=minbase bookworm "$rootfs" "${mirror:-http://deb.debian.org/debian}" >"$RUN/debootstrap.log" 2>&1 \
            || { tail -20 "$RUN/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }
        # apt as in the official image: deb822 sources (with updates and security), no lists.
        rm -f "$rootfs/etc/apt/sources.list"
        if [ -f /etc/apt/sources.list.d/debian.sources ]; then
            cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
        else
            printf 'deb http://deb.debian.org/debian bookworm main\n' >"$rootfs/etc/apt/sources.list"
        fi
        chroot "$rootfs" apt-get clean
        rm -rf "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import - "$BASE" >&2
        rm -rf "$rootfs"
    fi
fi

if [ "${IMAGE_SKIP_BUILD:-}" != 1 ]; then
    say "swift build -c release --static-swift-stdlib"
    swift build -c release --static-swift-stdlib >&2
fi
# The real path: a builder may not follow the .build/release symlink out of the context.
binary="$(realpath --relative-to="$REPO" "$(readlink -f .build/release)/crm-service")"
say "docker build -f deploy/cloudrun/Dockerfile -t $IMAGE (binary $binary)"
# The host's network: the build's apt-get reaches the mirror the host uses.
docker build --network host -f deploy/cloudrun/Dockerfile --build-arg "BINARY=$binary" -t "$IMAGE" . >&2
say "docker build -f tests/image/host.Dockerfile -t $HOST_IMAGE"
docker build --network host -f tests/image/host.Dockerfile --build-arg "BINARY=$binary" -t "$HOST_IMAGE" . >&2

if ! pg_out="$(scripts/pg.sh start 2>&1)"; then echo "$pg_out" >&2; exit 1; fi
echo "$pg_out" >&2
case "$pg_out" in *"starting PostgreSQL"*) started_pg=1 ;; esac

say "pytest tests/image"
# shellcheck disable=SC2086  # PYTEST_ARGS is split on purpose
CRM_IMAGE="$IMAGE" CRM_HOST_IMAGE="$HOST_IMAGE" TEST_DB_DSN="$(scripts/pg.sh dsn crm_image_test)" TEST_DB_SOCKET_DIR="$REPO/.run/pg/sock" \
    python3 -m pytest -q -o cache_dir="$RUN/pytest_cache" ${PYTEST_ARGS:-} tests/image
