package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// checkTLSConfig checks that a caller's *tls.Config can serve both ends of
// mutual TLS.
func checkTLSConfig(c *tls.Config) error {
	var errs []error
	if c.ClientAuth != tls.RequireAndVerifyClientCert {
		errs = append(errs, fmt.Errorf("ClientAuth is %v; peer traffic needs tls.RequireAndVerifyClientCert", c.ClientAuth))
	}
	if c.ClientCAs == nil && c.GetConfigForClient == nil {
		errs = append(errs, errors.New("ClientCAs is nil; the server could not verify peers"))
	}
	hasCert := len(c.Certificates) > 0
	if !hasCert && c.GetCertificate == nil && c.GetConfigForClient == nil {
		errs = append(errs, errors.New("no server certificate: set Certificates or GetCertificate"))
	}
	if !hasCert && c.GetClientCertificate == nil {
		errs = append(errs, errors.New("no client certificate: set Certificates or GetClientCertificate"))
	}
	if c.InsecureSkipVerify {
		errs = append(errs, errors.New("InsecureSkipVerify is set; peers must verify each other"))
	}
	return errors.Join(errs...)
}

// tlsConfigs returns the server and client TLS configurations for cfg,
// or nils when peer traffic is plaintext.
func tlsConfigs(cfg *Config) (server, client *tls.Config, err error) {
	switch {
	case cfg.TLS != nil:
		server = cfg.TLS.Clone()
		client = cfg.TLS.Clone()
	case cfg.TLSCertFile != "":
		pool, err := loadCAPool(cfg.TLSCAFile)
		if err != nil {
			return nil, nil, err
		}
		kp, err := newKeyPairReloader(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, nil, err
		}
		server = &tls.Config{
			ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs:  pool,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return kp.get()
			},
		}
		client = &tls.Config{
			RootCAs: pool,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return kp.get()
			},
		}
	default:
		return nil, nil, nil
	}
	// TLS 1.3 only: every peer runs this code, so there is nobody older
	// to talk to.
	server.MinVersion = tls.VersionTLS13
	client.MinVersion = tls.VersionTLS13
	return server, client, nil
}

func loadCAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("transport: TLS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("transport: TLS CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// keyPairReloader serves a certificate and key from files and re-reads
// them when either file changes, so that short-lived certificates (for
// example from cert-manager) rotate without a restart. Files are checked
// at most once per keyPairCheckInterval, on handshakes only.
type keyPairReloader struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp fileStamp
	keyStamp  fileStamp
	checked   time.Time
}

const keyPairCheckInterval = time.Second

// fileStamp identifies a version of a file.
type fileStamp struct {
	mod  time.Time
	size int64
}

func (a fileStamp) same(b fileStamp) bool { return a.mod.Equal(b.mod) && a.size == b.size }

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

func newKeyPairReloader(certFile, keyFile string) (*keyPairReloader, error) {
	r := &keyPairReloader{certFile: certFile, keyFile: keyFile}
	if err := r.load(); err != nil {
		return nil, err
	}
	r.checked = time.Now()
	return r, nil
}

// load reads both files; the caller holds mu or owns r.
func (r *keyPairReloader) load() error {
	cs, err := stampOf(r.certFile)
	if err != nil {
		return fmt.Errorf("transport: TLS certificate file: %w", err)
	}
	ks, err := stampOf(r.keyFile)
	if err != nil {
		return fmt.Errorf("transport: TLS key file: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("transport: TLS key pair %s, %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.certStamp, r.keyStamp = &cert, cs, ks
	return nil
}

// get returns the current certificate, reloading it if its files changed.
// A failed reload (for example a half-written file) keeps serving the
// previous certificate and retries at the next check.
func (r *keyPairReloader) get() (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= keyPairCheckInterval {
		r.checked = now
		cs, err1 := stampOf(r.certFile)
		ks, err2 := stampOf(r.keyFile)
		if err1 == nil && err2 == nil && (!cs.same(r.certStamp) || !ks.same(r.keyStamp)) {
			_ = r.load()
		}
	}
	return r.cert, nil
}
