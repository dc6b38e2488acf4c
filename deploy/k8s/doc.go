// Package k8s holds Rafty's Kubernetes manifests (statefulset.yaml,
// services.yaml, pdb.yaml) and, in manifests_test.go, the test that
// decodes them strictly into the official API types and checks that they
// agree with each other and with how kvnode reads its configuration, and
// that the pods pass the "restricted" Pod Security Standard.
//
// It is a module of its own so that the main module does not depend on
// k8s.io/api. Run its test with:
//
//	cd deploy/k8s && go test ./...
//
// Apply the manifests with `kubectl apply -f deploy/k8s/`.
package k8s
