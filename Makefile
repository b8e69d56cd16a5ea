# linkerd-mcp. `make demo` runs the product on its embedded defaults; `make test` runs every test.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build demo demo-check test check-fmt fmt clippy lint doc bench soak fuzz clean

all: build

deps:
	@scripts/deps.sh

build:
	$(CARGO) build --workspace --locked

DEMO_BINS := -p meshsim -p meshctl -p mesh-mcp -p kube-sim -p mesh-chatbot -p chatsim

demo: deps
	$(CARGO) build --locked $(DEMO_BINS)
	scripts/demo.sh

# The demo as a test: every command it prints is run, in order, and must exit 0.
demo-check: deps
	$(CARGO) build --locked $(DEMO_BINS)
	DEMO_ONCE=1 DEMO_CHECK=1 scripts/demo.sh

fmt:
	$(CARGO) fmt --all

check-fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

lint: check-fmt clippy

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

# Every test, against real Prometheus (and later Redis) started by the tests on loopback ports.
test: deps lint
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked --no-fail-fast; \
	else \
		$(CARGO) test --workspace --locked --no-fail-fast; \
	fi
	scripts/mcp-conformance.sh
	$(MAKE) --no-print-directory demo-check

# Benchmarks print figures and ratios; never part of `make test`.
bench:
	$(CARGO) build --release --locked -p mesh-collector
	$(CARGO) run --release --locked -p mesh-bench

# One mesh-mcp under 1,000 watch streams and 500 reads/s for SOAK_MINUTES while two collectors
# publish a delta every 2 s and the leader is killed once; prints the totals and writes
# target/soak/soak.{csv,svg,png}. Never part of `make test`.
SOAK_MINUTES ?= 10
soak: deps
	$(CARGO) build --release --locked -p mesh-bench -p mesh-mcp -p mesh-collector
	target/release/mesh-bench --case soak $(SOAK_MINUTES)

# Fuzzes every reader of untrusted input, FUZZ_SECONDS each (cargo-fuzz; the one stable
# toolchain runs it with RUSTC_BOOTSTRAP). New inputs that reach new code land in the corpora,
# which `make test` replays.
FUZZ_SECONDS ?= 180
FUZZ_TARGETS = chat_command slack_payload discord_payload identity_map topology proto_graph
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd crates/policy && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run manifest --sanitizer none -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048
	for t in $(FUZZ_TARGETS); do \
		(cd tools/fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir . $$t corpus/$$t seeds/$$t --sanitizer none -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048) || exit 1; \
	done

clean:
	$(CARGO) clean
