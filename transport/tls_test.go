package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/rafty-db/rafty/core"
	"github.com/rafty-db/rafty/driver"
	pb "github.com/rafty-db/rafty/transport/transportpb"
)

// testCA is a short-lived certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial = big.NewInt(100)

func nextSerial() *big.Int {
	serial = new(big.Int).Add(serial, big.NewInt(1))
	return serial
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key for a node, valid for loopback as
// both server and client.
func (ca *testCA) issue(t *testing.T, name string) (certPEM, keyPEM []byte, serialNum *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	must(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), tmpl.SerialNumber
}

// tlsFiles writes a node's certificate, key and CA bundle to a temporary
// directory and sets them in cfg.
func tlsFiles(t *testing.T, cfg *Config, ca *testCA, name string) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certPEM, keyPEM, _ := ca.issue(t, name)
	cfg.TLSCertFile = filepath.Join(dir, "node.crt")
	cfg.TLSKeyFile = filepath.Join(dir, "node.key")
	cfg.TLSCAFile = filepath.Join(dir, "ca.crt")
	must(t, os.WriteFile(cfg.TLSCertFile, certPEM, 0o600))
	must(t, os.WriteFile(cfg.TLSKeyFile, keyPEM, 0o600))
	must(t, os.WriteFile(cfg.TLSCAFile, ca.pem, 0o600))
	return cfg.TLSCertFile, cfg.TLSKeyFile
}

// tlsConfigFor builds a *tls.Config for Config.TLS.
func tlsConfigFor(t *testing.T, ca *testCA, name string) *tls.Config {
	t.Helper()
	certPEM, keyPEM, _ := ca.issue(t, name)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	must(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "rafty test CA")
	otherCA := newTestCA(t, "another CA")
	lis := []net.Listener{listen(t), listen(t), listen(t)}
	var peers []driver.Peer
	for i, l := range lis {
		peers = append(peers, driver.Peer{ID: uint64(i + 1), Addr: l.Addr().String()})
	}
	recs := []*recorder{newRecorder(), newRecorder(), newRecorder()}
	cfgs := make([]Config, 3)
	for i := range cfgs {
		cfgs[i] = testConfig(uint64(i+1), lis[i], peers, recs[i])
	}
	tlsFiles(t, &cfgs[0], ca, "node-1")         // files
	cfgs[1].TLS = tlsConfigFor(t, ca, "node-2") // prepared *tls.Config
	tlsFiles(t, &cfgs[2], otherCA, "intruder")  // valid certificate, wrong CA
	trs := make([]*GRPC, 3)
	for i := range cfgs {
		trs[i] = startNode(t, cfgs[i])
	}

	t.Run("good certificates", func(t *testing.T) {
		trs[0].Send([]core.Message{heartbeat(1, 2, 1)})
		trs[1].Send([]core.Message{heartbeat(2, 1, 1)})
		waitFor(t, "exchange over mTLS", func() bool { return recs[0].count() == 1 && recs[1].count() == 1 })
		got := make(chan string, 1)
		recs[1].snapshot = func(ctx context.Context, msg core.Message, data io.Reader) error {
			b, err := io.ReadAll(data)
			got <- string(b)
			return err
		}
		must(t, trs[0].SendSnapshot(context.Background(), snapMsg(1, 2), strings.NewReader("secret state")))
		expectf(t, <-got == "secret state", "snapshot data")
	})

	t.Run("wrong CA", func(t *testing.T) {
		// Node 3 is refused by node 1, and refuses node 1 in turn.
		waitFor(t, "refusals", func() bool {
			trs[2].Send([]core.Message{heartbeat(3, 1, 1)})
			trs[0].Send([]core.Message{heartbeat(1, 3, 1)})
			return trs[2].Stats().Dropped[DropUnreachable] > 0 && trs[0].Stats().Dropped[DropUnreachable] > 0
		})
		expectf(t, recs[0].count() == 1 && recs[2].count() == 0, "messages crossed a CA boundary")
		waitFor(t, "reports", func() bool { return recs[2].unreachableCount(1) > 0 && recs[0].unreachableCount(3) > 0 })
	})

	t.Run("no client certificate", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(ca.cert)
		// Trusts the server, but presents no certificate.
		creds := credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})
		expectRefused(t, trs[0], grpc.WithTransportCredentials(creds))
	})

	t.Run("plaintext", func(t *testing.T) {
		expectRefused(t, trs[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	})
	expectf(t, trs[0].Stats().MessagesReceived == 1, "node 1 accepted %d messages", trs[0].Stats().MessagesReceived)
}

// expectRefused checks that a client dialling tr with opts cannot get a
// batch accepted.
func expectRefused(t *testing.T, tr *GRPC, opts ...grpc.DialOption) {
	t.Helper()
	before := tr.Stats().BatchesReceived
	conn, err := grpc.NewClient(tr.Addr().String(), opts...)
	must(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	m := heartbeat(3, 1, 1)
	st, err := pb.NewRaftClient(conn).Stream(ctx)
	if err == nil {
		_ = st.Send(&pb.Batch{ClusterId: testCluster, From: 2, To: 1, Messages: []*pb.Message{toPBMessage(&m)}})
		_, err = st.CloseAndRecv()
	}
	expectf(t, err != nil, "RPC succeeded")
	t.Logf("refused: %v", err)
	expectf(t, tr.Stats().BatchesReceived == before, "batch accepted")
}

func TestCertificateRotation(t *testing.T) {
	ca := newTestCA(t, "rotating CA")
	rec := newRecorder()
	cfg := testConfig(1, listen(t), nil, rec)
	certFile, keyFile := tlsFiles(t, &cfg, ca, "node-1")
	tr := startNode(t, cfg)

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	clientPEM, clientKey, _ := ca.issue(t, "client")
	clientCert, err := tls.X509KeyPair(clientPEM, clientKey)
	must(t, err)
	served := func() *big.Int {
		c, err := tls.Dial("tcp", tr.Addr().String(), &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{clientCert}, NextProtos: []string{"h2"},
		})
		must(t, err)
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	first := served()

	// Rotate in place, as cert-manager does, and wait for new handshakes
	// to present the new certificate.
	certPEM, keyPEM, newSerial := ca.issue(t, "node-1")
	must(t, os.WriteFile(keyFile+".tmp", keyPEM, 0o600))
	must(t, os.WriteFile(certFile+".tmp", certPEM, 0o600))
	must(t, os.Rename(keyFile+".tmp", keyFile))
	must(t, os.Rename(certFile+".tmp", certFile))
	waitFor(t, "rotated certificate", func() bool { return served().Cmp(newSerial) == 0 })
	expectf(t, first.Cmp(newSerial) != 0, "serials collide")
}

func TestTLSConfigErrors(t *testing.T) {
	err := checkTLSConfig(&tls.Config{InsecureSkipVerify: true})
	for _, want := range []string{"ClientAuth", "ClientCAs", "no server certificate", "no client certificate", "InsecureSkipVerify"} {
		expectf(t, err != nil && strings.Contains(err.Error(), want), "error %v lacks %q", err, want)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	must(t, os.WriteFile(bad, []byte("not pem"), 0o600))
	for name, cfg := range map[string]Config{
		"missing CA": {TLSCertFile: bad, TLSKeyFile: bad, TLSCAFile: filepath.Join(dir, "nope")},
		"CA not PEM": {TLSCertFile: bad, TLSKeyFile: bad, TLSCAFile: bad},
	} {
		cfg.ClusterID, cfg.NodeID, cfg.ListenAddr = 1, 1, "127.0.0.1:0"
		_, err := New(cfg)
		expectf(t, err != nil, "%s: New succeeded", name)
		t.Logf("%s: %v", name, err)
	}
	ca := newTestCA(t, "ca")
	caFile := filepath.Join(dir, "ca.pem")
	must(t, os.WriteFile(caFile, ca.pem, 0o600))
	_, err = New(Config{ClusterID: 1, NodeID: 1, ListenAddr: "127.0.0.1:0", TLSCertFile: bad, TLSKeyFile: bad, TLSCAFile: caFile})
	expectf(t, err != nil && strings.Contains(err.Error(), "key pair"), "bad key pair: %v", err)
	expectf(t, !errors.Is(err, ErrClosed), "unexpected %v", err)
}
