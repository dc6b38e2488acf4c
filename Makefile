# Rafty build, test and benchmark entry points. `make test` is what CI runs.
GO        ?= go
PKGS      ?= ./...
SIM_SEEDS ?= 20000
CHAOS_DURATION ?= 10m
CHAOS_MEMBER_DURATION ?= 4m
STATICCHECK_VERSION ?= v0.8.2

IMAGE           ?= rafty/kvnode:dev
COMPOSE         ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_PROJECT ?= rafty

.PHONY: all build test test-short test-deploy lint fmt-check vet staticcheck sim bench bench-core proto tools clean \
	run image compose-up compose-down e2e bench-compare bench-join profile chaos

all: build

build:
	$(GO) build $(PKGS)

## test: everything CI checks — formatting, vet, staticcheck, unit and
## simulation tests under the race detector, fuzz seed corpora, the
## end-to-end and Docker Compose tests of kvnode, the k8s manifests.
test: lint test-deploy
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## test-deploy: the k8s manifest module (./... at the root does not reach it).
test-deploy:
	cd deploy/k8s && $(GO) vet ./... && staticcheck ./... && $(GO) test -count=1 ./...

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

## chaos: the long fault-injection run (docs/reliability.md): random fault
## schedules on 3- and 5-node kvnode clusters for CHAOS_DURATION, every
## history checked with porcupine, then Compose schedules for a fifth of
## that time, then the membership nemesis (joins, removals, replacements
## and promotions among kills, pauses and partitions) for
## CHAOS_MEMBER_DURATION. The short versions run in `make test`.
chaos:
	cd chaos && $(GO) test -count=1 -timeout 0 -v -run 'TestChaosLong|TestChaosCompose|TestChaosMembership$$' . \
		-chaos.duration=$(CHAOS_DURATION) -chaos.member-duration=$(CHAOS_MEMBER_DURATION)

## bench: microbenchmarks of every package, plus etcd raft's side by side.
bench: bench-core

bench-core:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./core/...
	cd bench/etcdraft && $(GO) test -run '^$$' -bench . -benchmem -count 5 .

## bench-compare: Rafty's and etcd's 3-node clusters alternately on loopback,
## same workload, 3 rounds, keyspaces of 100,000 keys (all 7 points) and
## 10,000 keys (put C=16/128, get C=128), each cluster preloaded before it is
## measured; etcd built with its own dependency versions (bench/etcd/member).
## Writes artifacts/bench/table.md (p50/p99/p99.9, one table per keyspace)
## and chart.svg. About 20 minutes; see bench/etcd/README.md for options.
bench-compare:
	bash bench/etcd/compare.sh

## bench-join: the leader's put throughput and p99/p99.9 without and during a
## learner join that catches up by snapshot (issue 14), alternating windows;
## writes artifacts/bench-join/table.md.
bench-join:
	bash scripts/bench-join.sh

## profile: CPU profiles of the leader and of a follower (and the leader's
## allocations) under 256-byte puts at C=128 over 100,000 preloaded keys
## (20 s), saved with pprof -top and -top -cum in artifacts/profile.
profile:
	GO=$(GO) ./scripts/profile.sh

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

## run: a three-node cluster on loopback, data in ./data (Ctrl-C stops it).
run:
	GO=$(GO) ./scripts/run-local.sh

## image: the static kvnode binary wrapped FROM scratch.
image:
	GO=$(GO) ./scripts/build-image.sh $(IMAGE)

compose-up: image
	KVNODE_IMAGE=$(IMAGE) $(COMPOSE) -f deploy/compose.yaml -p $(COMPOSE_PROJECT) up -d

## compose-down: COMPOSE_DOWN_FLAGS=-v also deletes the volumes.
compose-down:
	$(COMPOSE) -f deploy/compose.yaml -p $(COMPOSE_PROJECT) down $(COMPOSE_DOWN_FLAGS)

## e2e: only the multi-process and Docker Compose tests, verbosely.
e2e:
	$(GO) test -count=1 -timeout 10m -v -run 'TestEndToEnd|TestCompose' ./cmd/kvnode/

clean:
	rm -rf bin artifacts
