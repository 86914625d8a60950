# crm-service: the two commands that matter are `make run` and `make test`.
SHELL := /bin/bash

.PHONY: deps build release run test bench clean distclean

deps:
	scripts/deps.sh

build:
	swift build

release:
	swift build -c release

run:
	scripts/run.sh

test:
	scripts/test.sh

bench:
	@echo "not yet implemented (issue 5)"
	@exit 1

# Build products only; the local database in .run/pg survives (see distclean).
clean:
	rm -rf .build

# Everything generated: build products, the local PostgreSQL cluster, logs and dev key.
distclean: clean
	-scripts/pg.sh stop
	rm -rf .run
