package main

import (
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// newMetricsServer is the HTTP server of --metrics-listen. Besides
// HTTP/1.1 it speaks unencrypted HTTP/2 (h2c with prior knowledge), which
// is what a gRPC client sends: a kvnode client pointed at this port by
// mistake then gets a gRPC answer naming the client port (see
// grpcMisdirected) instead of an HTTP/2 framing error.
func newMetricsServer(addr string, mux http.Handler, clientAddr string, log *slog.Logger) *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Addr:              addr,
		Handler:           grpcMisdirected(mux, clientAddr),
		Protocols:         &protocols,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// grpcMisdirectedCode is the gRPC status a misdirected call gets:
// UNIMPLEMENTED (12), as for a method the server does not have. The
// client must not retry it here, and kvnode's client does not.
const grpcMisdirectedCode = "12"

// grpcMisdirected answers every gRPC request (HTTP/2 with a content type
// of application/grpc) with status UNIMPLEMENTED and a message saying
// this is the metrics port and where the client port is; anything else
// goes to next.
func grpcMisdirected(next http.Handler, clientAddr string) http.Handler {
	msg := "this is kvnode's metrics port (HTTP: /metrics, /healthz, /readyz); send gRPC requests to its client port, --client-listen " + clientAddr
	encoded := grpcPercentEncode(msg)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			next.ServeHTTP(w, r)
			return
		}
		// A trailers-only response: the status in the only HEADERS
		// frame, which ends the stream.
		h := w.Header()
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", grpcMisdirectedCode)
		h.Set("Grpc-Message", encoded)
		w.WriteHeader(http.StatusOK)
	})
}

// grpcPercentEncode encodes a grpc-message value as the gRPC HTTP/2
// protocol requires: bytes outside printable ASCII, and '%', as %XX.
func grpcPercentEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
