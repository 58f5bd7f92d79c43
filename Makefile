# kafka-proxy: the two commands a new machine needs are `make run` and `make test`.
SHELL := /bin/bash
KAFKA ?=
ARGS ?=

.PHONY: run test check build kafka-start kafka-stop js-deps

## Run the proxy on :9999. Without KAFKA=host:port it starts a local broker (scripts/kafka) and
## creates the topic `test` so the README's wscat example works at once.
run:
	@scripts/build-deps
	@if [ -z "$(KAFKA)" ]; then \
	  scripts/kafka start && \
	  (scripts/kafka topics --describe --topic test >/dev/null 2>&1 || \
	   scripts/kafka topics --create --topic test --partitions 1 --replication-factor 1); \
	fi
	cargo run --release -- --kafka "$(if $(KAFKA),$(KAFKA),127.0.0.1:9092)" $(ARGS)

## Everything CI runs: formatting, lints, unit and integration tests against a real broker, and
## the real-client (npm ws / wscat) tests.
test:
	scripts/test

build:
	scripts/build-deps
	cargo build --release

kafka-start:
	scripts/kafka start

kafka-stop:
	scripts/kafka stop

## Fault tests, long version (tests/chaos.rs with KP_CHAOS_LONG=1): 200,000 records, more consumer
## crashes, proxy SIGKILLs and broker restarts, on the test's own broker at 127.0.0.1:19092.
.PHONY: chaos
chaos:
	KP_CHAOS_LONG=1 cargo test --test chaos -- --nocapture

-include bench.mk
