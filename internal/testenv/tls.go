package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// CA is a certificate authority of the tests' own, made with crypto/x509
// (ECDSA P-256: fast to generate, accepted by Go, OpenSSL-based MariaDB and
// PostgreSQL alike), valid from an hour ago for a day. The Kubernetes control
// plane (package kube) and the TLS-enabled database servers both use it.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, PEM-encoded: what a client trusts.
	PEM []byte
}

// NewCA generates a CA whose subject's common name is name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := template(name)
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
	tmpl.BasicConstraintsValid, tmpl.IsCA = true, true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Issue signs a serving certificate for the given DNS names and IP
// addresses (its subject alternative names, which clients verify the host
// they dialled against) and returns it and its new private key, PEM-encoded.
func (ca *CA) Issue(commonName string, dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := template(commonName)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.DNSNames, tmpl.IPAddresses = dnsNames, ips
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = KeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// WriteFile writes the CA certificate to a file in dir (ca.pem) and
// returns its path, failing the test if it cannot.
func (ca *CA) WriteFile(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, ca.PEM, 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return path
}

// PrivateKeyPEM is the CA's private key, PEM-encoded (a cluster's signer
// needs it).
func (ca *CA) PrivateKeyPEM() ([]byte, error) { return KeyPEM(ca.key) }

// KeyPEM encodes an ECDSA private key as a PEM "EC PRIVATE KEY" block.
func KeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// template is what every certificate here shares: a random serial, the
// subject, valid from an hour ago (clock skew) for a day.
func template(commonName string) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
	}
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

// serverTLS is the key material of a managed database server's TLS: a CA of
// its own and a certificate it signed for exactly 127.0.0.1, the address
// every managed server listens on. The certificate names no DNS name, so
// connecting to the same server as "localhost" is a host name mismatch
// under full verification: tests of that case need no second server.
type serverTLS struct {
	caFile, certFile, keyFile string
}

// serverHost is the only name in a managed server's certificate.
const serverHost = "127.0.0.1"

// writeServerTLS writes ca.pem, server.pem and server.key into dir; the key
// is readable only by the server's user (cred, or this process's).
func writeServerTLS(dir string, cred *syscall.Credential) (*serverTLS, error) {
	ca, err := NewCA("leasecron-testenv-db-ca")
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.Issue("leasecron-testenv-db", nil, []net.IP{net.ParseIP(serverHost)})
	if err != nil {
		return nil, err
	}
	s := &serverTLS{
		caFile:   filepath.Join(dir, "ca.pem"),
		certFile: filepath.Join(dir, "server.pem"),
		keyFile:  filepath.Join(dir, "server.key"),
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{s.caFile, ca.PEM, 0o644}, {s.certFile, certPEM, 0o644}, {s.keyFile, keyPEM, 0o600}} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("writing %s: %w", f.path, err)
		}
		if cred != nil {
			if err := os.Chown(f.path, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}
