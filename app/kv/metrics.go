package kv

// PebbleStats summarises the storage engine's state for operators: how
// much it holds, how far compaction is behind, and how well the block
// cache works. Read amplification and L0 depth rising over time mean
// compaction cannot keep up with the write rate.
type PebbleStats struct {
	DiskSpaceUsageBytes uint64
	MemTableBytes       uint64
	MemTableCount       int64
	L0Files             int64
	L0Sublevels         int32
	ReadAmplification   int
	Compactions         int64
	CompactionDebtBytes uint64
	Flushes             int64
	BlockCacheBytes     int64
	BlockCacheHits      int64
	BlockCacheMisses    int64
}

// PebbleStats returns the engine's current statistics; it fails once the
// store is closed.
func (s *Store) PebbleStats() (PebbleStats, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.usable(); err != nil {
		return PebbleStats{}, err
	}
	m := s.db.Metrics()
	return PebbleStats{
		DiskSpaceUsageBytes: m.DiskSpaceUsage(),
		MemTableBytes:       m.MemTable.Size,
		MemTableCount:       m.MemTable.Count,
		L0Files:             m.Levels[0].TablesCount,
		L0Sublevels:         m.Levels[0].Sublevels,
		ReadAmplification:   m.ReadAmp(),
		Compactions:         m.Compact.Count,
		CompactionDebtBytes: m.Compact.EstimatedDebt,
		Flushes:             m.Flush.Count,
		BlockCacheBytes:     m.BlockCache.Size,
		BlockCacheHits:      m.BlockCache.Hits,
		BlockCacheMisses:    m.BlockCache.Misses,
	}, nil
}
