package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rafty-db/rafty/app/kv/kvpb"
)

// startMetricsServer runs the metrics server as serve builds it, on a
// loopback port, until the test ends; clientAddr is what it names as the
// client port.
func startMetricsServer(t *testing.T, clientAddr string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &readiness{node: &nodeRef{}}
	srv := newMetricsServer(lis.Addr().String(), newMetricsMux(prometheus.NewRegistry(), r, discardLogger(), false), clientAddr, discardLogger())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("metrics server: %v", err)
		}
	})
	return lis.Addr().String()
}

// A gRPC client pointed at the metrics port is told, in a gRPC status,
// that this is the metrics port and where the client port is; HTTP
// clients are served as before.
func TestMetricsPortAnswersGRPC(t *testing.T) {
	const clientAddr = "127.0.0.1:23791"
	addr := startMetricsServer(t, clientAddr)
	want := "this is kvnode's metrics port (HTTP: /metrics, /healthz, /readyz); send gRPC requests to its client port, --client-listen " + clientAddr

	for _, args := range [][]string{{"get", "k"}, {"put", "k", "v"}} {
		args = append(args, "--endpoints", addr, "--timeout", "20s")
		start := time.Now()
		code, stdout, stderr := runCLI(t, args...)
		wantOneLineError(t, args, code, stdout, stderr, exitFailure, addr+": unimplemented: "+want)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("kvnode %q took %v: the answer was retried", args, took)
		}
	}

	// The status exactly, as any gRPC client sees it.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = kvpb.NewKVClient(conn).Status(ctx, &kvpb.StatusRequest{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != want {
		t.Errorf("Status on the metrics port: %v, want Unimplemented %q", err, want)
	}

	// HTTP/1.1 and HTTP/2 requests that are not gRPC are served.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" || resp.ProtoMajor != 1 {
		t.Errorf("HTTP/1.1 /healthz: %s %q", resp.Status, body)
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	defer h2.CloseIdleConnections()
	resp, err = h2.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(string(body)) != "starting" {
		t.Errorf("HTTP/2 /readyz: %s %s %q", resp.Proto, resp.Status, body)
	}
}

func TestGRPCPercentEncode(t *testing.T) {
	for in, want := range map[string]string{
		"plain text: a/b (c)": "plain text: a/b (c)",
		"100% sure":           "100%25 sure",
		"line\nbreak é":       "line%0Abreak %C3%A9",
	} {
		if got := grpcPercentEncode(in); got != want {
			t.Errorf("grpcPercentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}
