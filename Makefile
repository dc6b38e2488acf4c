# Rafty build, test and benchmark entry points. `make test` is what CI runs.
GO        ?= go
PKGS      ?= ./...
SIM_SEEDS ?= 20000
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all build test test-short lint fmt-check vet staticcheck sim bench bench-core fuzz proto tools clean

all: build

build:
	$(GO) build $(PKGS)

## test: everything CI checks — formatting, vet, staticcheck, unit and
## simulation tests under the race detector, fuzz seed corpora.
test: lint
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## test-short: the same tests without the race detector, for quick loops.
test-short:
	$(GO) test -count=1 $(PKGS)

lint: fmt-check vet staticcheck

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	@command -v staticcheck >/dev/null 2>&1 || { echo "staticcheck not installed: run 'make tools'"; exit 1; }
	staticcheck $(PKGS)

## sim: the long deterministic simulation run (prints the seed and a
## replayable trace of any failure).
sim:
	$(GO) test -count=1 -timeout 60m -run 'TestSimulation' ./core/sim/ -sim.seeds=$(SIM_SEEDS)

## bench: microbenchmarks of every package, plus etcd raft's side by side.
bench: bench-core

bench-core:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./core/...
	cd bench/etcdraft && $(GO) test -run '^$$' -bench . -benchmem -count 5 .

## proto: regenerate protobuf code (needs protoc, protoc-gen-go, protoc-gen-go-grpc).
proto:
	protoc --proto_path=transport/transportpb --go_out=paths=source_relative:transport/transportpb \
		--go-grpc_out=paths=source_relative:transport/transportpb transport/transportpb/*.proto
	protoc --proto_path=app/kv/kvpb --go_out=paths=source_relative:app/kv/kvpb \
		--go-grpc_out=paths=source_relative:app/kv/kvpb app/kv/kvpb/*.proto

## tools: install the code generators and linters the build uses.
tools:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.1
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean:
	rm -rf bin artifacts
