# selfheal — the Makefile is the entry point: CI calls these same targets.

GO          ?= go
BIN         ?= selfheal
# The version stamped into every binary (selfheal --version, the
# selfheal_build_info metric, the replicas table): VERSION and git.
VERSION     ?= $(shell cat VERSION)
REVISION    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
BRANCH      ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
BUILD_DATE  ?= $(shell date -u +%Y%m%d-%H:%M:%S)
VPKG         = github.com/prometheus/common/version
LDFLAGS     ?= -X $(VPKG).Version=$(VERSION) -X $(VPKG).Revision=$(REVISION) -X $(VPKG).Branch=$(BRANCH) \
               -X $(VPKG).BuildUser=$(shell id -un)@$(shell hostname) -X $(VPKG).BuildDate=$(BUILD_DATE)
NFPM        ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
# go-nvml's header marks many functions deprecated; the warnings are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build build-static image package test test-deploy scenarios test-race test-gpu lint run bench deps clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/selfheal

# A static selfheal for hosts without GPUs: no cgo, so no NVML (the gpu
# collector reports no GPUs and the GPU actions refuse, saying why).
build-static:
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)-static ./cmd/selfheal

deps:
	scripts/deps.sh

# Every test, against real PostgreSQL and Docker; fuzz seeds included, and
# the game-day scenarios. -parallel 4: the scenarios mostly wait on
# Prometheus' and Alertmanager's clocks, not on the CPU. go test's own vet
# is off because go vet has just run every analyser; test binaries are
# linked without DWARF (-w), a third less CPU per link, and go test links
# one per package at every run.
TESTFLAGS   ?= -count=1 -parallel 4 -vet=off -ldflags=-w
# go test runs two packages at a time, in the order given. cmd/selfheal
# (the game days, about two and a half minutes) holds one slot; the others
# follow each other in the second, the longest first, so that the short
# ones fill whichever slot frees first at the end instead of a long one
# starting last.
MODULE      := github.com/selfheal/selfheal
TEST_FIRST   = $(addprefix $(MODULE)/,cmd/selfheal remediator/server remediator/store remediator/actions \
               remediator/containers grafana exporter/docker remediator/webhook remediator/drain exporter/probe)
TEST_PKGS    = $(TEST_FIRST) $(filter-out $(TEST_FIRST),$(shell $(GO) list ./...))
test: deps
	$(GO) vet ./...
	$(GO) test $(TESTFLAGS) -timeout 15m $(TEST_PKGS)

# The deployment as shipped, run for real: the compose stack brought up
# with stand-ins for its public images, built here (deploy/stack_test.go);
# the .deb installed and purged (deploy/package_test.go); each example
# configuration served on this host (cmd/selfheal/quiet_test.go). Its own
# target: it needs root, the stand-in images and about ten minutes.
test-deploy: deps package
	scripts/images.sh standins
	$(GO) test -tags deploy -p 1 -parallel 4 -count=1 -v -timeout 20m -run 'TestComposeStack|TestGatewayProxyExample|TestImageAsDocumented|TestDebianPackage|TestShippedConfigsQuiet' ./deploy/ ./cmd/selfheal/

# The game days alone: each failure mode the seed names, through the
# shipped rules, routing and example configuration (cmd/selfheal/scenarios_test.go).
scenarios: deps
	$(GO) test -count=1 -parallel 4 -timeout 10m -run '^TestScenario' ./cmd/selfheal/

# The race detector over the packages whose tests need no external service
# (the others run real PostgreSQL, Docker and Prometheus processes, where
# it would mostly slow them down).
RACE_PKGS = ./remediator/engine/ ./remediator/policy/ ./remediator/action/ ./remediator/optin/ ./exporter/system/ ./exporter/gpu/ ./migrations/
# Of the store's, the test of what the engine does from two goroutines at
# once (renewing a lease while the outcome is recorded); of the webhook's,
# the group commit's.
test-race:
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -race -count=1 -run 'TestRenewWhileFinishing' ./remediator/store/
	$(GO) test -race -count=1 -run 'Commit|Deliveries|Delivery|Unstorable' ./remediator/webhook/

# On a machine with an NVIDIA GPU: the gpu collector against the real
# driver, read-only, checked against nvidia-smi.
test-gpu:
	SELFHEAL_TEST_GPU=1 $(GO) test -count=1 -v -run 'TestRealGPU' ./exporter/gpu/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags deploy ./deploy/ ./cmd/selfheal/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags deploy ./deploy/ ./cmd/selfheal/

# The local stack; Ctrl-C stops everything it started.
run: deps build
	scripts/run.sh

# selfheal's image from the Dockerfile, its base images made here from
# Debian's packages and this machine's Go (no registry is needed).
image: deps
	scripts/images.sh

# selfheal's .deb and .rpm in dist/ (deploy/package/nfpm.yaml), from a
# build with cgo (NVML) stamped with VERSION.
package:
	$(MAKE) build BIN=selfheal
	mkdir -p dist
	for p in deb rpm; do \
		ARCH=$$($(GO) env GOARCH) VERSION=$(VERSION) $(NFPM) package -f deploy/package/nfpm.yaml -p $$p -t dist/ || exit 1; \
	done

bench:
	scripts/deps.sh bench
	scripts/bench.sh

clean:
	rm -rf $(BIN) $(BIN)-static .run dist
