# leasecron — run `make help` for the targets.
GO      ?= go
BIN     := bin/leasecron
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/leasecron/leasecron/internal/version.Version=$(VERSION) \
           -X github.com/leasecron/leasecron/internal/version.Commit=$(COMMIT)
# Test packages share two cores and start real servers; keep them from piling up.
TESTFLAGS ?= -count=1 -p 2 -timeout 30m

.PHONY: help build run test e2e test-deps tools generate fuzz bench lint cross release image clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/leasecron (static, as the Dockerfile builds it)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/controller

run: build ## run a local controller: file-lock election, SQLite in ./leasecron.db
	./$(BIN) run --mode filelock --lock-file leasecron.lock --database-dsn sqlite://leasecron.db --http-addr 127.0.0.1:8080

test: test-deps tools ## run every test (starts its own MariaDB, PostgreSQL and Kubernetes control plane)
	$(GO) test $(TESTFLAGS) ./...

e2e: test-deps tools ## run the end-to-end suite: the chart on a real control plane and MariaDB, Pods run by a pod runner
	$(GO) test $(TESTFLAGS) ./test/e2e/

test-deps: ## install the database servers the tests start, if missing (Debian; needs root)
	@hack/install-test-deps.sh

FUZZTIME ?= 15s
fuzz: ## fuzz schedule and DSN parsing and the CRD's schedule rule, FUZZTIME (15s) per target; CI runs 10s
	$(GO) test -run '^$$' -fuzz '^FuzzParseSchedule$$' -fuzztime $(FUZZTIME) ./pkg/jobs/
	$(GO) test -run '^$$' -fuzz '^FuzzParseDSN$$' -fuzztime $(FUZZTIME) ./pkg/model/
	$(GO) test -run '^$$' -fuzz '^FuzzDSNRedactsPassword$$' -fuzztime $(FUZZTIME) ./pkg/model/
	$(GO) test -run '^$$' -fuzz '^FuzzScheduleRule$$' -fuzztime $(FUZZTIME) ./hack/crdgen/

CHAOS ?= 5m
chaos: test-deps tools ## random faults against 5 replicas for CHAOS (5m), with a report; make test runs 40s
	LEASECRON_CHAOS_DURATION=$(CHAOS) $(GO) test -count=1 -timeout 60m -v -run TestChaos ./test/chaos/

bench: test-deps tools ## measure leasecron against the alternatives and rewrite BENCHMARKS.md (about 30 minutes; not part of make test)
	$(GO) test -tags bench -count=1 -timeout 60m -run TestBenchmarks -v ./test/bench/ -args -out $(CURDIR)/BENCHMARKS.md

tools: ## build the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl, helm) into .cache/tools/bin, if missing
	@hack/tools/build.sh

generate: ## regenerate the ScheduledJob CRD (charts/leasecron/crds) and pkg/spec's DeepCopy from pkg/spec/types.go
	@GO=$(GO) hack/generate.sh

lint: ## go vet, gofmt, and the generated files up to date
	$(GO) vet ./...
	$(GO) vet -tags bench ./test/bench/
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@GO=$(GO) hack/generate.sh --check

cross: ## build and go vet the shipped code for macOS and Windows, amd64 and arm64 (the test harness is Linux-only)
	@GO=$(GO) hack/cross.sh

DIST ?= dist
release: ## build dist/ (or DIST=dir): linux/amd64 and arm64 binaries linked as make build links them, the chart, LICENSE, SHA256SUMS (needs helm: make tools)
	@GO="$(GO)" VERSION="$(VERSION)" COMMIT="$(COMMIT)" LDFLAGS="$(LDFLAGS)" DIST="$(DIST)" CHART_VERSION="$(CHART_VERSION)" hack/release.sh

IMAGE ?= leasecron
image: ## build the container image leasecron:<git describe> (IMAGE=name to rename) with BuildKit, version and commit from git
	DOCKER_BUILDKIT=1 docker build --build-arg VERSION="$(VERSION)" --build-arg COMMIT="$(COMMIT)" -t "$(IMAGE):$(VERSION)" .

clean: ## remove build output and the local database
	rm -rf bin dist leasecron.db leasecron.db-shm leasecron.db-wal leasecron.lock
