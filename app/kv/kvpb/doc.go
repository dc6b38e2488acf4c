// Package kvpb holds the protobuf messages and gRPC service of Rafty's
// key-value store, generated from kv.proto (regenerate with gen.sh or
// `make proto`). Package app/kv implements the service and documents its
// semantics; kvpb.Command is also the encoding of writes in the Raft log.
package kvpb

//go:generate sh gen.sh
