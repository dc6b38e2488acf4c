// Package drivertest provides in-process stand-ins for the parts of a
// driver.Node that touch the outside world, for tests, examples and
// benchmarks of code built on package driver:
//
//   - Network, an in-memory driver.Transport connecting nodes in one
//     process, with per-pair partitions and a message filter for drops;
//   - Clock, a manual driver.Clock whose time moves only when told to
//     (Advance), or steadily in the background (Run), so tests decide
//     when elections can happen.
//
// Both honour the driver's contracts: Send never blocks, messages between
// a pair are delivered in order or dropped, handlers are never called
// after the endpoint is closed, and Close stops every goroutine.
package drivertest
