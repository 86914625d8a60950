# crm-service: the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash

.PHONY: deps build release run test bench image-test fuzz clean distclean

deps:
	scripts/deps.sh

build:
	swift build

release:
	swift build -c release --static-swift-stdlib

run:
	scripts/run.sh

test:
	scripts/test.sh

# Not part of `make test`: PostgreSQL + nginx + the release worker + a C floor + a fake CRM, under wrk (bench/README.md).
bench:
	bench/run.sh

# Not part of `make test`: runs the Cloud Run image and the systemd units in containers (tests/image; needs root; starts its own dockerd when none runs).
image-test:
	scripts/image-test.sh

# libFuzzer + AddressSanitizer on the parsers, the router and the connectors (fuzz/README.md;
# FUZZ_SECONDS, FUZZ_TARGETS). `make test` only replays the seeds (scripts/fuzz.sh --replay).
fuzz:
	scripts/fuzz.sh

# Build products only; the local database in .run/pg survives (see distclean).
clean:
	rm -rf .build .build-fuzz

# Everything generated: build products, the local PostgreSQL cluster, logs and dev key.
distclean: clean
	-scripts/pg.sh stop
	rm -rf .run
