package disk

import "github.com/rafty-db/rafty/core"

// entryCache keeps the most recently saved entries so that the common read
// (a leader sending what it just wrote, a follower applying what it just
// received) needs no disk access. Invariants: cached entries are contiguous
// and end at the log's last index; bytes (counted as core.Entry.Size) stays
// <= max once an append returns. Data slices are never written after being
// cached, so they can be handed to readers without copying.
type entryCache struct {
	max   int64
	ents  []core.Entry // ents[head:] are cached
	head  int
	bytes int64
}

func (c *entryCache) len() int { return len(c.ents) - c.head }

// bounds returns the cached range [lo, hi); lo == hi when empty.
func (c *entryCache) bounds() (lo, hi uint64) {
	if c.len() == 0 {
		return 0, 0
	}
	return c.ents[c.head].Index, c.ents[len(c.ents)-1].Index + 1
}

func (c *entryCache) get(i uint64) *core.Entry {
	lo, hi := c.bounds()
	if i < lo || i >= hi {
		return nil
	}
	return &c.ents[c.head+int(i-lo)]
}

// append adds entries written after everything cached; an index at or below
// the cached end supersedes the cached suffix, a gap empties the cache.
func (c *entryCache) append(ents []core.Entry) {
	if c.max == 0 || len(ents) == 0 {
		return
	}
	lo, hi := c.bounds()
	switch first := ents[0].Index; {
	case c.len() == 0:
	case first < lo || first > hi:
		c.reset()
	case first < hi:
		c.truncateFrom(first)
	}
	for i := range ents {
		c.ents = append(c.ents, ents[i])
		c.bytes += int64(ents[i].Size())
	}
	c.evict()
}

func (c *entryCache) truncateFrom(i uint64) {
	lo, hi := c.bounds()
	if i >= hi {
		return
	}
	if i <= lo {
		c.reset()
		return
	}
	keep := c.head + int(i-lo)
	for k := keep; k < len(c.ents); k++ {
		c.bytes -= int64(c.ents[k].Size())
		c.ents[k] = core.Entry{}
	}
	c.ents = c.ents[:keep]
}

// trimBefore drops entries below i.
func (c *entryCache) trimBefore(i uint64) {
	for c.len() > 0 && c.ents[c.head].Index < i {
		c.dropFront()
	}
	c.compact()
}

func (c *entryCache) evict() {
	for c.bytes > c.max && c.len() > 0 {
		c.dropFront()
	}
	c.compact()
}

func (c *entryCache) dropFront() {
	c.bytes -= int64(c.ents[c.head].Size())
	c.ents[c.head] = core.Entry{} // release Data for the GC
	c.head++
}

// compact moves the live part to the front once the dead prefix dominates,
// keeping the backing array proportional to what is cached.
func (c *entryCache) compact() {
	if c.head > 0 && c.head >= c.len() {
		n := copy(c.ents, c.ents[c.head:])
		clear(c.ents[n:])
		c.ents = c.ents[:n]
		c.head = 0
	}
}

func (c *entryCache) reset() {
	clear(c.ents)
	c.ents = c.ents[:0]
	c.head = 0
	c.bytes = 0
}
