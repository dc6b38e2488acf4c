// Package proctest is test support, imported only by _test.go files: the
// harness shared by the tests that run the real kvnode binary, namely
// cmd/kvnode's end-to-end and Docker Compose tests and the chaos suite
// (chaos/). Both build kvnode, run it as processes on loopback and as the
// Docker Compose deployment, and wait for it to be ready; this package
// holds that code once, so that the two suites skip, time out and clean
// up alike and cannot drift apart. It also measures the test process
// itself (PeakRSS) for the memory-bound tests of transport and driver.
// Production code must not import it.
//
// What can skip or fail a test takes a testing.TB; what runs inside a
// fault schedule (which reports errors, not failures) returns an error.
package proctest
