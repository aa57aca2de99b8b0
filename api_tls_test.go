package main

// The API client over TLS: the stand-in server behind httptest's TLS
// listener, the built binary's `list` with and without the CA bundle.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clearml-go/clearml-agent/testdata/fakeserver"
)

// startTLSServer is the stand-in server on https://127.0.0.1:PORT, and a
// PEM file of its certificate (httptest's, valid for 127.0.0.1).
func startTLSServer(t *testing.T) (*fakeserver.Server, string, string) {
	t.Helper()
	s := fakeserver.New()
	ts := httptest.NewUnstartedServer(s)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return s, ts.URL, certPEMFile(t, ts)
}

func certPEMFile(t *testing.T, ts *httptest.Server) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// selfSignedPEM is a fresh CA certificate for 127.0.0.1, in PEM.
func selfSignedPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestCABundleEndToEnd(t *testing.T) {
	_, url, ca := startTLSServer(t)
	// Another CA's certificate: a bundle that does not vouch for ours
	// (httptest's servers all share one certificate).
	otherCA := writeFile(t, filepath.Join(t.TempDir(), "other.pem"), selfSignedPEM(t))
	garbage := writeFile(t, filepath.Join(t.TempDir(), "garbage.pem"), "not a certificate\n")

	for _, c := range []struct {
		name  string
		extra map[string]string
		code  int
		want  string // in the one error line
	}{
		{"bundle", map[string]string{"REQUESTS_CA_BUNDLE": ca}, 0, ""},
		{"curl bundle", map[string]string{"CURL_CA_BUNDLE": ca}, 0, ""},
		{"no bundle", nil, 1, "certificate signed by unknown authority (set REQUESTS_CA_BUNDLE to the CA bundle that signed the server's certificate, or api.verify_certificate: false to skip the check)"},
		{"wrong bundle", map[string]string{"REQUESTS_CA_BUNDLE": otherCA}, 1, "certificate signed by unknown authority (set REQUESTS_CA_BUNDLE"},
		{"verify off", map[string]string{"CLEARML_API_HOST_VERIFY_CERT": "0"}, 0, ""},
		{"missing bundle", map[string]string{"REQUESTS_CA_BUNDLE": ca + ".missing"}, 1, "cannot read the CA bundle " + ca + ".missing"},
		{"no PEM", map[string]string{"REQUESTS_CA_BUNDLE": garbage}, 1, "the CA bundle " + garbage + " holds no PEM certificate (fix REQUESTS_CA_BUNDLE)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := serverEnvAt(url)
			for k, v := range c.extra {
				env[k] = v
			}
			r := runAgent(t, env, "list")
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, c.code, r.stdout, r.stderr)
			}
			if c.code == 0 && !strings.Contains(r.stdout, "workers:") {
				t.Errorf("stdout:\n%s", r.stdout)
			}
			if c.want != "" {
				oneErrorLine(t, r, c.want)
			}
		})
	}
}

// The bundle is read at the first TLS connection, not at start: a client
// of a plain http server never reads it (so it may vanish after the
// start's check), one of an https server does.
func TestCABundleReadOnFirstTLS(t *testing.T) {
	plain := startServer(t)
	_, url, ca := startTLSServer(t)
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	b, _ := os.ReadFile(ca)
	writeFile(t, bundle, string(b))
	clients := map[string]*apiClient{}
	for name, host := range map[string]string{"plain": plain.URL(), "tls": url} {
		c, err := newTestClient(t.TempDir(), host, map[string]string{"REQUESTS_CA_BUNDLE": bundle}, clientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		clients[name] = c
	}
	if err := os.Remove(bundle); err != nil {
		t.Fatal(err)
	}
	if err := clients["plain"].call(context.Background(), "queues.get_all", "2.4", map[string]any{}, nil); err != nil {
		t.Errorf("plain http with the bundle gone: %v", err)
	}
	err := clients["tls"].call(context.Background(), "queues.get_all", "2.4", map[string]any{}, nil)
	if err == nil || !strings.Contains(err.Error(), "cannot read the CA bundle "+bundle) {
		t.Errorf("https with the bundle gone: %v", err)
	}
	if _, err := newTestClient(t.TempDir(), url, map[string]string{"REQUESTS_CA_BUNDLE": bundle}, clientOptions{}); err == nil || !strings.Contains(err.Error(), "cannot read the CA bundle") {
		t.Errorf("a missing bundle at start: %v", err)
	}
}
