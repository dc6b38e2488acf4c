package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun runs the example program's cluster: three nodes over gRPC with
// disk logs, which must agree on the counter, finish within its timeout
// and leave no goroutine behind (goleak, TestMain).
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	start := time.Now()
	if err := run(ctx, t.TempDir(), &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("ran in %v", time.Since(start).Round(time.Millisecond))
	want := "node 1: counter = 1\nnode 2: counter = 2\nnode 3: counter = 3\nnode 3 reads 3\n"
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}

// maxExampleLines bounds the embedding example, state machine included.
const maxExampleLines = 60

// TestReadmeMatchesExamples: README.md's "Embedding the library" snippet,
// this program and driver's Example are the same code: the README's
// first Go block in that section equals the text between the embed
// markers of both files, up to whitespace.
func TestReadmeMatchesExamples(t *testing.T) {
	readme := readmeSnippet(t, "../../README.md", "## Embedding the library")
	if n := strings.Count(readme, "\n") + 1; n > maxExampleLines {
		t.Errorf("the README snippet has %d lines, more than %d", n, maxExampleLines)
	}
	for _, file := range []string{"main.go", "../../driver/example_test.go"} {
		region := markedRegion(t, file)
		if got, want := normalize(region), normalize(readme); got != want {
			t.Errorf("%s differs from README.md's snippet at line %d:\n  %s: %q\n  README.md: %q",
				file, firstDiff(got, want)+1, file, line(got, firstDiff(got, want)), line(want, firstDiff(got, want)))
		}
	}
}

// readmeSnippet returns the first ```go block after heading in file.
func readmeSnippet(t *testing.T, file, heading string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no %q section", file, heading)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatalf("%s: section %q has no ```go block", file, heading)
	}
	block, _, ok = strings.Cut(block, "```")
	if !ok {
		t.Fatalf("%s: section %q has an unterminated ```go block", file, heading)
	}
	return strings.TrimSpace(block)
}

// markedRegion returns the text between "// embed:begin" and
// "// embed:end" in file.
func markedRegion(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "// embed:begin\n")
	if !ok {
		t.Fatalf("%s has no // embed:begin marker", file)
	}
	region, _, ok := strings.Cut(rest, "// embed:end")
	if !ok {
		t.Fatalf("%s has no // embed:end marker", file)
	}
	return strings.TrimSpace(region)
}

// normalize makes each line's runs of blanks one space and drops blank
// lines, so that indentation with tabs or spaces and alignment do not
// count as differences.
func normalize(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// firstDiff returns the index of the first line where a and b differ.
func firstDiff(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i
		}
	}
	return min(len(al), len(bl))
}

// line returns line i of s, or "" past its end.
func line(s string, i int) string {
	if ls := strings.Split(s, "\n"); i < len(ls) {
		return ls[i]
	}
	return ""
}
