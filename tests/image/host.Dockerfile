# A Debian 12 host for tests/image/test_host.py: systemd as PID 1, with PostgreSQL, nginx and
# the worker's runtime libraries from Debian, and crm-service installed by deploy/install.sh
# as deploy/README.md ("Install on a Debian 12 host") says. Built by scripts/image-test.sh.
FROM debian:12-slim

ARG BINARY=.build/release/crm-service

# python3 runs the fake CRMs (tests/fakes/fake_crm.py, copied in by the test) on this host.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        systemd systemd-sysv dbus postgresql nginx libfcgi0ldbl libpq5 libcurl4 libssl3 ca-certificates curl python3 \
    && rm -rf /var/lib/apt/lists/*

COPY deploy/ /opt/crm-service-deploy/
COPY ${BINARY} /opt/crm-service-deploy/crm-service
# No systemd runs during a build: the test starts the units.
RUN /opt/crm-service-deploy/install.sh --binary /opt/crm-service-deploy/crm-service --no-build --no-systemctl

STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
