package driver

import "testing"

func TestRegistryTakeOnce(t *testing.T) {
	r := newRegistry[int]()
	if !r.add(1, 10) || !r.add(2, 20) {
		t.Fatal("add failed")
	}
	if w, ok := r.take(1); !ok || w != 10 {
		t.Fatalf("take(1) = %v %v", w, ok)
	}
	if _, ok := r.take(1); ok {
		t.Fatal("a waiter was taken twice")
	}
	rest := r.close()
	if len(rest) != 1 || rest[0] != 20 {
		t.Fatalf("close returned %v", rest)
	}
	if r.add(3, 30) {
		t.Fatal("add after close succeeded")
	}
	if rest := r.close(); len(rest) != 0 {
		t.Fatalf("registry still held %v after close", rest)
	}
}

func TestReadHeapReleasesInIndexOrder(t *testing.T) {
	var h readHeap
	for _, r := range []readAtIndex{{7, 1}, {3, 2}, {9, 3}, {3, 4}, {5, 5}} {
		h.push(r)
	}
	got := h.popReady(5, nil)
	if len(got) != 3 || h.Len() != 2 {
		t.Fatalf("popReady(5) = %v, %d left", got, h.Len())
	}
	for _, id := range got {
		if id != 2 && id != 4 && id != 5 {
			t.Fatalf("released read %d early", id)
		}
	}
	if got := h.popReady(100, nil); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("popReady(100) = %v", got)
	}
}
