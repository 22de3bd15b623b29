package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/skiffdb/skiff/raftpb"
)

// testPKI is a CA and what it signed, generated per test.
type testPKI struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "skiff test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testPKI{caCert: cert, caKey: key, pool: pool}
}

// hostCert issues a certificate for 127.0.0.1 usable as server and client.
func (p *testPKI) hostCert(t testing.TB, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "skiff host"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mutualTLS is a host's config: its certificate, the CA for both
// directions, client certificates required.
func (p *testPKI) mutualTLS(t testing.TB, serial int64) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.hostCert(t, serial)},
		RootCAs:      p.pool,
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

func TestTCPMutualTLS(t *testing.T) {
	leakCheck(t)
	pki := newTestPKI(t)
	a, ra := startTCP(t, TCPConfig{TLS: pki.mutualTLS(t, 2)})
	b, rb := startTCP(t, TCPConfig{TLS: pki.mutualTLS(t, 3)})
	const n = 1000
	for i := range n {
		a.Send(b.Addr(), []raftpb.Message{msg(uint64(i), []byte("tls"))})
		b.Send(a.Addr(), []raftpb.Message{msg(uint64(i), nil)})
	}
	rb.waitMessages(t, n)
	ra.waitMessages(t, n)
	checkOrder(t, rb.messages(), n)
	checkOrder(t, ra.messages(), n)
	// The snapshot lane runs over TLS too.
	rb.reset() // testSnapshotLane counts b's messages from zero
	testSnapshotLane(t, a, b, rb)

	// A client without a certificate: the handshake fails on the server,
	// the connection is closed, nothing is delivered.
	before := len(rb.messages())
	c, err := net.DialTimeout("tcp", b.Addr(), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})
	// With TLS 1.3 the client may finish its side before the server has
	// checked for a certificate; the refusal then shows on the next I/O.
	if err := tc.Handshake(); err == nil {
		tc.Write(append(appendPreamble(nil, laneRaft, 7), validFrame(7, msg(0, nil))...))
	}
	// The server counts before it closes: wait for the close on the socket.
	waitClosed(t, c)
	if got := b.Stats().RejectedConns; got != 1 {
		t.Fatalf("RejectedConns = %d, want 1", got)
	}
	// A plain-TCP client to a TLS host is refused as well.
	pc := rawDial(t, b.Addr(), append(appendPreamble(nil, laneRaft, 7), validFrame(7, msg(0, nil))...))
	waitClosed(t, pc)
	if got := b.Stats().RejectedConns; got != 2 {
		t.Fatalf("RejectedConns = %d, want 2", got)
	}
	if got := len(rb.messages()); got != before {
		t.Fatalf("%d messages delivered from refused clients", got-before)
	}

	// A host whose certificate another CA signed cannot send.
	other := newTestPKI(t)
	x, rx := startTCP(t, TCPConfig{TLS: other.mutualTLS(t, 4)})
	x.Send(b.Addr(), []raftpb.Message{msg(0, nil)})
	rx.waitFor(t, "unreachable", func(r *recorder) bool { return r.unreachable[b.Addr()] > 0 })
	if got := len(rb.messages()); got != before {
		t.Fatalf("%d messages delivered from a host of another CA", got-before)
	}
}
