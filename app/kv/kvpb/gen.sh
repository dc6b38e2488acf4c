#!/bin/sh
# Regenerates the Go code for kv.proto and cluster.proto (*.pb.go, *_grpc.pb.go). Works
# from any directory (`make proto`, `go generate ./app/kv/kvpb`); needs
# protoc, protoc-gen-go and protoc-gen-go-grpc on PATH (`make tools`).
set -eu
cd "$(dirname "$0")/../../.."
protoc --proto_path=app/kv/kvpb \
	--go_out=paths=source_relative:app/kv/kvpb \
	--go-grpc_out=paths=source_relative:app/kv/kvpb \
	app/kv/kvpb/kv.proto app/kv/kvpb/cluster.proto
