package testcluster

import (
	"fmt"
	"testing"
	"testing/synctest"
)

func TestProposeAndReadOnEveryHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := New(t, Config{Seed: 1})
		c.WaitLeader(1)
		var last uint64
		for i := 0; i < 50; i++ {
			res := c.Propose(1, Set(fmt.Sprintf("k%d", i), []byte(fmt.Sprint(i))))
			last = res.Value
		}
		if last != 50 {
			t.Fatalf("50th result %d, want 50", last)
		}
		for i := 0; i < c.N(); i++ {
			v, err := c.Read(i, 1, []byte("k49"))
			if err != nil || string(v) != "49" {
				t.Fatalf("host %d read k49: %q, %v", i, v, err)
			}
		}
	})
}
