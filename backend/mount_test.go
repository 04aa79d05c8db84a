package backend

import (
	"context"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestMountIdentitySharedAndKept checks that the watch and patch halves see
// one id, and that a new backend on the same storage (a plugin restart)
// finds it again instead of making another.
func TestMountIdentitySharedAndKept(t *testing.T) {
	ctx := context.Background()
	s := &logical.InmemStorage{}
	var first, second mountIdentity
	a, err := first.get(ctx, s)
	if err != nil || len(a) != 32 {
		t.Fatalf("first id %q, %v; want 32 hex characters", a, err)
	}
	if again, _ := first.get(ctx, s); again != a {
		t.Errorf("same backend answered %q, then %q", a, again)
	}
	if b, err := second.get(ctx, s); err != nil || b != a {
		t.Errorf("after a restart the id is %q (%v), want the stored %q", b, err, a)
	}
}
