package main

// The API client's trust store. REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE)
// names the CA bundle to verify the server with, as requests does for the
// Python agent: the bundle replaces the system roots. Parsing a
// system-sized bundle costs 10-20 ms and 3 MiB of peak memory, paid by
// every execute and by each daemon; a server reached over plain http never
// needs it, so the roots are read at the first request that makes a TLS
// connection (an https URL, or an https proxy).

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync"
)

// caBundleTransport sends plain http requests through plain, and the
// others through the same transport with the bundle's roots, built once
// on first use.
type caBundleTransport struct {
	plain *http.Transport
	tls   func() (*http.Transport, error)
}

// newCABundleTransport wraps base (whose TLS config must verify) for the
// bundle at path. The file is checked now, so a wrong path is a start
// error, not a first request's.
func newCABundleTransport(base *http.Transport, path string) (*caBundleTransport, error) {
	if _, err := readCABundle(path); err != nil {
		return nil, err
	}
	return &caBundleTransport{plain: base, tls: sync.OnceValues(func() (*http.Transport, error) {
		data, err := readCABundle(path)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, caBundleEmpty(path)
		}
		t := base.Clone()
		t.TLSClientConfig.RootCAs = pool
		return t, nil
	})}, nil
}

// readCABundle reads the bundle and checks that it holds a certificate,
// without parsing it (a few hundred KiB: cheap to read twice, dear to parse).
func readCABundle(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &configError{fmt.Sprintf("cannot read the CA bundle %s: %v (fix REQUESTS_CA_BUNDLE)", path, unwrapPathErr(err))}
	}
	if !bytes.Contains(data, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, caBundleEmpty(path)
	}
	return data, nil
}

func caBundleEmpty(path string) error {
	return &configError{fmt.Sprintf("the CA bundle %s holds no PEM certificate (fix REQUESTS_CA_BUNDLE)", path)}
}

func (c *caBundleTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !c.needsTLS(r) {
		return c.plain.RoundTrip(r)
	}
	t, err := c.tls()
	if err != nil {
		if r.Body != nil {
			r.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, err
	}
	return t.RoundTrip(r)
}

// needsTLS: an https URL, or a proxy reached over https.
func (c *caBundleTransport) needsTLS(r *http.Request) bool {
	if r.URL.Scheme != "http" {
		return true
	}
	if c.plain.Proxy == nil {
		return false
	}
	p, err := c.plain.Proxy(r)
	return err != nil || p != nil && p.Scheme != "http"
}
