package main

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestReviewScanBinaryKeys: PUT and GET take any bytes as key and value
// (the key percent-escaped), but a scan answers with a JSON object of
// strings, and encoding/json replaces every invalid UTF-8 byte with
// U+FFFD: two distinct keys collapse into one entry and values come back
// altered. Either such keys must be refused at PUT (400) or the scan must
// return them exactly.
func TestReviewScanBinaryKeys(t *testing.T) {
	p := startInProcess(t, nil)
	accepted := map[string]string{}
	for _, c := range []struct{ esc, key, value string }{
		{"u%FE", "u\xfe", "\xff"},
		{"u%FF", "u\xff", "plain"},
	} {
		code, body := p.req("PUT", "/v1/kv/"+c.esc, []byte(c.value))
		switch code {
		case http.StatusNoContent:
			accepted[c.key] = c.value
		case http.StatusBadRequest:
			// Refusing keys or values the scan cannot represent is a fix.
		default:
			t.Fatalf("PUT %s: %d %s", c.esc, code, body)
		}
	}
	var m map[string]string
	if err := json.Unmarshal(p.expect("GET", "/v1/kv?prefix=u", nil, 200, ""), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range accepted {
		got, ok := m[k]
		if !ok || got != v {
			t.Errorf("scan lost or altered key %q (value %q): scan = %q", k, v, m)
		}
	}
}

// TestReviewMethodNotAllowed: a method a route does not take is answered
// 404 "no route" by the catch-all, where HTTP (RFC 9110 §15.5.6) wants
// 405 with an Allow header; ServeMux does that by itself when no "/"
// pattern swallows every method.
func TestReviewMethodNotAllowed(t *testing.T) {
	p := startInProcess(t, nil)
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/kv/a"},
		{"PUT", "/v1/status"},
		{"GET", "/v1/snapshot"},
	} {
		req, err := http.NewRequest(c.method, p.base+c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := p.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
			t.Errorf("%s %s: %d (Allow %q), want 405 with an Allow header", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

// TestReviewCASMalformedQuery: r.URL.Query() silently drops a pair it
// cannot parse (a bad %-escape, or an unescaped ';', which Go refuses as
// a separator since 1.17), so a compare-and-set whose ?prev= is not
// well-formed arrives without "prev" and is applied as an unconditional
// PUT: 204 and the value overwritten, where the client asked for "only if
// the current value is ...". It must be a 400 (or at least never a write).
func TestReviewCASMalformedQuery(t *testing.T) {
	p := startInProcess(t, nil)
	p.expect("PUT", "/v1/kv/k", []byte("current"), 204, "")
	for _, q := range []string{"?prev=a;b", "?prev=%zz"} {
		code, body := p.req("PUT", "/v1/kv/k"+q, []byte("overwritten"))
		if code/100 == 2 {
			t.Errorf("CAS PUT /v1/kv/k%s with a current value other than prev: %d %s, want 400 (or 412)", q, code, body)
		}
		if b := p.expect("GET", "/v1/kv/k", nil, 200, ""); string(b) != "current" {
			t.Fatalf("after the CAS %s that cannot match, k = %q, want \"current\"", q, b)
		}
	}
}
