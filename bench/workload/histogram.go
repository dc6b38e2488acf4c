package workload

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records durations in log-linear buckets, in the manner of HDR
// histograms: values below 2^subBits ns each have their own bucket; above,
// every power of two is split into 2^subBits equal buckets, so a bucket's
// width is under 1/128 of its values (relative error < 0.8 %). Memory is
// fixed (about 58 KiB) whatever is recorded. Not safe for concurrent use:
// keep one per goroutine and Merge them.
type Histogram struct {
	counts [numBuckets]int64
	n      int64
	sum    float64 // nanoseconds, for the mean
	min    int64
	max    int64
}

const (
	subBits    = 7
	subCount   = 1 << subBits
	numBuckets = subCount + (64-subBits)*subCount
)

// bucketOf returns the bucket index of v ≥ 0 nanoseconds.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 1 // v in [2^e, 2^(e+1)), e >= subBits
	shift := e - subBits
	sub := int(uint64(v)>>shift) - subCount // 0..subCount-1
	return subCount + shift*subCount + sub
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	shift := (i - subCount) / subCount
	sub := (i - subCount) % subCount
	lo = int64(subCount+sub) << shift
	return lo, lo + (int64(1) << shift) - 1
}

// Record adds one duration; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds all of o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 { return h.n }

// Max returns the largest recorded value (exact).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Min returns the smallest recorded value (exact).
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Mean returns the exact mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.n)))
}

// Quantile returns the q-quantile (0 < q ≤ 1) of the recorded values: the
// value of rank ceil(q·n), reported as the middle of its bucket and clamped
// to the recorded minimum and maximum. It is 0 for an empty histogram.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := lo + (hi-lo)/2
			v = max(v, h.min)
			v = min(v, h.max)
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
