# Benchmarks (see BENCHMARKS.md). Included from the Makefile; not part of `make test`.
.PHONY: bench bench-smoke

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
