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

# Property tests, long: every property of tests/protocol_props.rs and the ack ledger's and JSON
# encoder's (src/flow/ledger.rs, src/protocol/json.rs), in rounds of PROPS_CASES cases each with
# fresh random input, until PROPS_MINUTES have passed (the round under way finishes). Optimised but
# with overflow checks and debug assertions, in its own profile (target/props-long; its first
# build takes several minutes). A failure stops the run; its case is kept in
# tests/protocol_props.proptest-regressions (commit it) and replayed first by every later run.
PROPS_MINUTES ?= 10
PROPS_CASES ?= 100000
PROPS_PROFILE = --profile props-long --config 'profile.props-long.inherits="release"' \
	--config profile.props-long.overflow-checks=true --config profile.props-long.debug-assertions=true \
	--config profile.props-long.debug=0 --config profile.props-long.incremental=false
.PHONY: props-long
props-long:
	cargo test $(PROPS_PROFILE) --test protocol_props --lib --no-run
	@start=$$(date +%s); end=$$(( start + $(PROPS_MINUTES) * 60 )); round=0; \
	while [ $$(date +%s) -lt $$end ]; do \
	  round=$$(( round + 1 )); \
	  echo "=== props-long round $$round, PROPTEST_CASES=$(PROPS_CASES), $$(( $$(date +%s) - start )) s in"; \
	  PROPTEST_CASES=$(PROPS_CASES) cargo test -q $(PROPS_PROFILE) --test protocol_props || exit 1; \
	  PROPTEST_CASES=$(PROPS_CASES) cargo test -q $(PROPS_PROFILE) --lib -- flow::ledger protocol:: || exit 1; \
	done; \
	echo "=== props-long passed: $$round rounds of $(PROPS_CASES) cases per property in $$(( $$(date +%s) - start )) s"
