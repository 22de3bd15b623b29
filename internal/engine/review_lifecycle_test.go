package engine

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skiffdb/skiff/statemachine"
)

// openingEngine opens one engine and starts group 1 on a goroutine whose
// create function blocks until release is closed: the group's ID is then
// reserved in e.nodes with a nil node (StartGroup opens outside e.mu).
func openingEngine(t *testing.T) (e *Engine, release chan struct{}, started <-chan error) {
	t.Helper()
	trs, members := tcpTransports(t, 1)
	e, err := Open(Config{Dir: "host", FS: vfs.NewMem(), Transport: trs[0], TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan struct{})
	release = make(chan struct{})
	done := make(chan error, 1)
	create := func(g, r uint64) statemachine.StateMachine {
		close(in)
		<-release
		return newKV(g, r)
	}
	go func() {
		done <- e.StartGroup(context.Background(), GroupConfig{Group: 1, Replica: 1, Members: members}, create)
	}()
	<-in
	return e, release, done
}

// catch runs fn and returns the panic it raised, if any.
func catch(fn func()) (p any) {
	defer func() { p = recover() }()
	fn()
	return nil
}

// TestReviewRequestWhileGroupOpens: requests for a group whose StartGroup
// is still opening it fail (not found) instead of using the nil placeholder
// (regression test: fixed in d9f96f6 while this review ran).
func TestReviewRequestWhileGroupOpens(t *testing.T) {
	e, release, started := openingEngine(t)
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var err error
	if p := catch(func() { _, err = e.GroupStatus(1) }); p != nil {
		close(release)
		<-started
		t.Fatalf("GroupStatus while the group opens panicked: %v", p)
	}
	if err == nil {
		t.Errorf("GroupStatus while the group opens: no error")
	}
	if p := catch(func() { _, err = e.Propose(ctx, 1, []byte("k=v")) }); p != nil {
		close(release)
		<-started
		t.Fatalf("Propose while the group opens panicked: %v", p)
	}
	close(release)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
}

func TestReviewCloseWhileGroupOpens(t *testing.T) {
	e, release, started := openingEngine(t)
	closed := make(chan any, 1)
	go func() { closed <- catch(func() { e.Close() }) }()
	var p any
	select {
	case p = <-closed:
		close(release)
	case <-time.After(2 * time.Second):
		// Close may legitimately wait for the opening group.
		close(release)
		p = <-closed
	}
	err := <-started
	if p != nil {
		t.Fatalf("Close while a group opens panicked: %v", p)
	}
	if err == nil {
		t.Fatalf("StartGroup finished after Close: want an error")
	}
}
