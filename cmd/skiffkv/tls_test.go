package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePKI writes a CA and one certificate per replica (for 127.0.0.1,
// server and client use) as PEM files into dir.
func writePKI(t *testing.T, dir string, replicas int) (ca string, certs, keys []string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "skiffkv test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca = write("ca.pem", "CERTIFICATE", caDER)
	for i := range replicas {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: fmt.Sprintf("replica %d", i+1)},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, write(fmt.Sprintf("r%d.pem", i+1), "CERTIFICATE", der))
		keys = append(keys, write(fmt.Sprintf("r%d-key.pem", i+1), "EC PRIVATE KEY", keyDER))
	}
	return ca, certs, keys
}

// TestServeMutualTLS runs three replicas in this process with mutual TLS
// between them: a write on one is read linearizably on another, so both
// lanes' handshakes worked with the PEM files of the flags.
func TestServeMutualTLS(t *testing.T) {
	leakCheck(t)
	dir := t.TempDir()
	ca, certs, keys := writePKI(t, dir, 3)
	ports, err := freePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	var members []string
	for i := range 3 {
		members = append(members, fmt.Sprintf("%d=127.0.0.1:%d", i+1, ports[2*i]))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	for i := range 3 {
		c, err := parseServe([]string{"--id", fmt.Sprint(i + 1), "--data", filepath.Join(dir, fmt.Sprint(i+1)),
			"--raft-addr", fmt.Sprintf("127.0.0.1:%d", ports[2*i]), "--http-addr", fmt.Sprintf("127.0.0.1:%d", ports[2*i+1]),
			"--members", strings.Join(members, ","), "--tls-cert", certs[i], "--tls-key", keys[i], "--tls-ca", ca}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		go func() { done <- serve(ctx, c, slog.New(slog.DiscardHandler)) }()
	}
	cl := &localCluster{nodes: map[uint64]*replicaProc{}, http: &http.Client{}}
	t.Cleanup(func() {
		cancel()
		for range 3 {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
		cl.http.CloseIdleConnections()
	})
	for i := range 3 {
		cl.nodes[uint64(i+1)] = &replicaProc{httpAddr: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	var got []byte
	for {
		if err := cl.put(wctx, 1, "secret", []byte("over tls")); err == nil {
			if got, err = cl.do(wctx, "GET", cl.url(3, "/v1/kv/secret"), nil); err == nil {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("a replica stopped: %v", err)
		case <-wctx.Done():
			t.Fatal("no write through a TLS cluster within 30s")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if string(got) != "over tls" {
		t.Fatalf("read %q", got)
	}
	// The Raft port speaks TLS and requires a client certificate: a
	// client trusting the CA but without one is turned away.
	pemCA, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0]), &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatalf("TLS handshake with the Raft port: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("a client without a certificate was not refused: %v", err)
	}
}

// TestServeBadTLSFiles: unreadable or wrong TLS files stop serve at start
// with a message naming the flag (exit 1), before anything is written.
func TestServeBadTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ca, certs, keys := writePKI(t, dir, 1)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ cert, key, ca, want string }{
		"missing cert":   {filepath.Join(dir, "nope.pem"), keys[0], ca, "--tls-cert"},
		"key mismatch":   {certs[0], notPEM, ca, "--tls-cert"},
		"CA without PEM": {certs[0], keys[0], notPEM, "--tls-ca"},
		"missing CA":     {certs[0], keys[0], filepath.Join(dir, "nope-ca.pem"), "--tls-ca"},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), []string{"serve", "--id", "1", "--data", filepath.Join(dir, "d-"+strings.ReplaceAll(name, " ", "-")),
			"--raft-addr", "127.0.0.1:1", "--http-addr", "127.0.0.1:2", "--members", "1=127.0.0.1:1",
			"--tls-cert", c.cert, "--tls-key", c.key, "--tls-ca", c.ca}, io.Discard, &stderr)
		if code != exitFail || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d naming %s", name, code, stderr.String(), exitFail, c.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "d-"+strings.ReplaceAll(name, " ", "-"))); !os.IsNotExist(err) {
			t.Errorf("%s: the data directory was created (%v)", name, err)
		}
	}
}
