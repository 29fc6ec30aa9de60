# appliance — build, run and test. `make help` lists the targets.

GO       ?= go
BIN      ?= bin/appliance
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
PKG      := github.com/appliance-dev/appliance
LDFLAGS  := -s -w -X $(PKG)/internal/version.Version=$(VERSION) -X $(PKG)/internal/version.Commit=$(COMMIT)
GOLANGCI ?= $(shell command -v golangci-lint 2>/dev/null || echo $(HOME)/go/bin/golangci-lint)

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/appliance
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/appliance

.PHONY: run
run: build ## Run the appliance on its embedded defaults (data in ./data, HTTPS :8443, HTTP :8080)
	./$(BIN) serve

# The end-to-end tests of the registry, import and pull paths run a second
# time with every appliance's content in a bucket of its own on a real Ceph
# (test/e2e APPLIANCE_E2E_STORAGE=s3; docs/architecture.md, "Tests on S3"),
# save the faults that only a local disk has.
E2E_S3_RUN  := ^(TestRealClients|TestImportThroughCLI|TestImportSurvivesKilledServer|TestUserCommands|TestPrivateProjectUnreachable|TestBundleRoundTrip|TestFsckAndGCThroughCLI|TestFaults)$$
E2E_S3_SKIP := ^TestFaults$$/^(full_disk|kill_during_gc)

.PHONY: test
test: ## Run every test (unit, in-process and end-to-end with real clients; the core e2e tests again on S3)
	mkdir -p $(CURDIR)/test-output/s3
	$(GO) test -race -count=1 -timeout 30m -artifacts -outputdir $(CURDIR)/test-output ./...
	APPLIANCE_E2E_STORAGE=s3 $(GO) test -count=1 -timeout 15m -artifacts -outputdir $(CURDIR)/test-output/s3 \
		-run '$(E2E_S3_RUN)' -skip '$(E2E_S3_SKIP)' ./test/e2e

.PHONY: ova
ova: build ## Build dist/appliance-$(VERSION).ova, as root (debootstrap; see docs/ova.md)
	$(GO) run ./packaging/ova/mkova -binary $(BIN) -version $(VERSION) -out dist -work dist/ova-work

BENCHES := blobpull manifests import bundle apt promote load replicas

.PHONY: bench bench-smoke $(addprefix bench-,$(BENCHES))
bench: ## List the benchmarks: make bench-NAME [ARGS='-rounds 5'] runs one (docs/performance.md)
	@echo "make bench-NAME, NAME one of: $(BENCHES)"; echo "ARGS='...' passes flags (go run ./bench/NAME -h); make bench-smoke runs each at its smoke size"

$(addprefix bench-,$(BENCHES)): bench-%: build
	$(GO) run ./bench/$* -appliance $(BIN) $(ARGS)

bench-smoke: build ## Run every benchmark at its smoke size (-smoke: small data, 1 round)
	@for b in $(BENCHES); do $(GO) run ./bench/$$b -appliance $(BIN) -smoke $(ARGS) || exit 1; done

.PHONY: lint
lint: ## go vet, gofmt and golangci-lint
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GOLANGCI) run ./...

.PHONY: clean
clean: ## Remove build output (not ./data)
	rm -rf bin dist
