#!/usr/bin/env bash
# Builds the kvnode container image (what `make image` runs):
#
#   scripts/build-image.sh [TAG]        TAG defaults to $IMAGE or rafty/kvnode:dev
#
# The binary is compiled here, statically (CGO_ENABLED=0; Pebble needs no
# cgo), and copied into a throw-away build context with an empty data/
# directory; deploy/Dockerfile then only wraps it FROM scratch, so no base
# image has to be pulled. KVNODE_BIN=path uses an already built static
# binary instead (the tests do, to avoid a second build).
set -euo pipefail

cd "$(dirname "$0")/.."
tag=${1:-${IMAGE:-rafty/kvnode:dev}}
go=${GO:-go}

ctx=$(mktemp -d "${TMPDIR:-/tmp}/kvnode-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT

if [[ -n ${KVNODE_BIN:-} ]]; then
	cp "$KVNODE_BIN" "$ctx/kvnode"
else
	echo "building static kvnode binary"
	CGO_ENABLED=0 "$go" build -trimpath -ldflags='-s -w' -o "$ctx/kvnode" ./cmd/kvnode
fi
mkdir "$ctx/data"

echo "building image $tag"
# DOCKER_BUILDKIT=0: the classic builder needs no buildx plugin and no
# network, and this Dockerfile uses nothing BuildKit adds.
DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build --quiet -f deploy/Dockerfile -t "$tag" "$ctx" >/dev/null
echo "built $tag"
