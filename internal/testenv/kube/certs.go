package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/leasecron/leasecron/internal/testenv"
)

// pki holds the file paths of the key material written by writePKI.
type pki struct {
	caCert, caKey         string // cluster CA: signs the serving cert; KCM's root CA and CSR signer
	servingCert, servKey  string // kube-apiserver serving cert for 127.0.0.1/localhost/kubernetes.default...
	saKey, saPub          string // service-account token signing key pair
	caPEM                 []byte
	adminToken, tokenFile string
}

// writePKI generates everything the control plane needs with crypto/x509 (ECDSA
// P-256: fast to generate, accepted for serving certs and ServiceAccount tokens).
func writePKI(dir string) (*pki, error) {
	p := &pki{
		caCert:      filepath.Join(dir, "ca.crt"),
		caKey:       filepath.Join(dir, "ca.key"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servKey:     filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		saPub:       filepath.Join(dir, "sa.pub"),
		tokenFile:   filepath.Join(dir, "tokens.csv"),
	}
	ca, err := testenv.NewCA("leasecron-testenv-ca")
	if err != nil {
		return nil, err
	}
	p.caPEM = ca.PEM
	servingPEM, servingKeyPEM, err := ca.Issue("kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(serviceClusterIP)})
	if err != nil {
		return nil, err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}

	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	p.adminToken = hex.EncodeToString(tok)

	files := []struct {
		path string
		data func() ([]byte, error)
	}{
		{p.caCert, func() ([]byte, error) { return p.caPEM, nil }},
		{p.caKey, ca.PrivateKeyPEM},
		{p.servingCert, func() ([]byte, error) { return servingPEM, nil }},
		{p.servKey, func() ([]byte, error) { return servingKeyPEM, nil }},
		{p.saKey, func() ([]byte, error) { return testenv.KeyPEM(saKey) }},
		{p.saPub, func() ([]byte, error) {
			der, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
			return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), err
		}},
		// token,user,uid,"group1,group2": the admin is in system:masters (cluster-admin via RBAC bootstrap).
		{p.tokenFile, func() ([]byte, error) {
			return fmt.Appendf(nil, "%s,%s,%s,\"system:masters\"\n", p.adminToken, adminUser, adminUser+"-uid"), nil
		}},
	}
	for _, f := range files {
		data, err := f.data()
		if err != nil {
			return nil, fmt.Errorf("encoding %s: %w", f.path, err)
		}
		if err := os.WriteFile(f.path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}
