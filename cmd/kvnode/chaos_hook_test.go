//go:build !chaos

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNormalBuildHasNoChaos: the production build carries none of the
// chaos suite's fault injection — no power-loss file layer in its
// dependencies, the operating system's file system under its storage.
func TestNormalBuildHasNoChaos(t *testing.T) {
	fs, err := storageFS(nil)
	if fs != nil || err != nil {
		t.Fatalf("storageFS in a normal build = %v, %v; want nil, nil", fs, err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to list the build's dependencies: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasSuffix(pkg, "/internal/powerloss") {
			t.Fatalf("the normal kvnode build depends on %s", pkg)
		}
	}
}
