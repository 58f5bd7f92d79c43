# Benchmarks (see BENCHMARKS.md). Included from the Makefile; not part of `make test`.
.PHONY: bench bench-smoke storm

## Full benchmark: every figure against a direct librdkafka baseline from the same run (~6 min).
bench:
	cargo build --release -p kp-bench -p kafka-proxy
	scripts/kafka start
	target/release/kp-bench $(BENCH_ARGS)

## The harness end to end with tiny sizes (under a minute); CI runs it and asserts no timing.
bench-smoke:
	cargo build --release -p kp-bench -p kafka-proxy
	scripts/kafka start
	target/release/kp-bench --smoke $(BENCH_ARGS)

## Connection storm (tests/hostile.rs) against the release binary: 5,000 live-tail + 500 group
## sockets at once; prints RSS (baseline, peak, after), threads and librdkafka clients. CI runs
## the same test with 1,000 + 100 against the debug binary. STORM_BINS=label=PATH,... compares builds.
STORM_BINS ?= release=target/release/kafka-proxy
storm:
	cargo build --release -p kafka-proxy
	scripts/kafka start
	KP_STORM_FULL=1 KP_STORM_SETTLE=15 KP_STORM_BINS="$(STORM_BINS)" \
	  cargo test --test hostile -- --nocapture a_connection_storm
