// Command stsrender prints, as JSON, the pods a StatefulSet manifest
// makes for the given ordinals in a namespace: each container's command,
// its environment with $(VAR) expanded as the kubelet does, its volumes
// (with the StatefulSet's claim names), its DNS name and its security
// settings (k8s.Pod). chaos/statefulset_test.go runs its output as Docker
// containers:
//
//	stsrender -f deploy/k8s/statefulset.yaml -namespace prod -ordinals 0-4
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/rafty-db/rafty/deploy/k8s"
)

func main() {
	file := flag.String("f", "statefulset.yaml", "the manifest holding the StatefulSet")
	ns := flag.String("namespace", "default", "the namespace the pods run in")
	container := flag.String("container", "kvnode", "the container to render")
	ordinals := flag.String("ordinals", "0-2", "ordinals to render: N, N-M, or a comma-separated list of those")
	domain := flag.String("cluster-domain", k8s.DefaultClusterDomain, "the cluster's DNS domain")
	flag.Parse()
	if err := run(*file, *ns, *container, *ordinals, *domain); err != nil {
		fmt.Fprintln(os.Stderr, "stsrender:", err)
		os.Exit(1)
	}
}

func run(file, ns, container, ordinals, domain string) error {
	ords, err := parseOrdinals(ordinals)
	if err != nil {
		return err
	}
	sts, err := k8s.LoadStatefulSet(file)
	if err != nil {
		return err
	}
	var pods []k8s.Pod
	for _, o := range ords {
		p, err := k8s.RenderPod(sts, container, o, ns, domain)
		if err != nil {
			return fmt.Errorf("pod %d: %w", o, err)
		}
		pods = append(pods, p)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(pods)
}

// maxOrdinals bounds one rendering.
const maxOrdinals = 1000

// parseOrdinals parses "0-4", "3", "0,2,5-6".
func parseOrdinals(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("-ordinals %q: bad ordinal %q", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("-ordinals %q: bad range %q", s, part)
			}
		}
		if b-a+len(out) >= maxOrdinals {
			return nil, fmt.Errorf("-ordinals %q: more than %d", s, maxOrdinals)
		}
		for o := a; o <= b; o++ {
			out = append(out, o)
		}
	}
	return out, nil
}
