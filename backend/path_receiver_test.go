package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/receiver"
	"github.com/flant/flant_gitops/backend/receiver/receivertest"
)

// countingStorage counts the storage operations a request makes.
type countingStorage struct {
	logical.Storage
	mu               sync.Mutex
	gets, puts, lsts int
}

func (c *countingStorage) Get(ctx context.Context, k string) (*logical.StorageEntry, error) {
	c.mu.Lock()
	c.gets++
	c.mu.Unlock()
	return c.Storage.Get(ctx, k)
}

func (c *countingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	c.mu.Lock()
	c.puts++
	c.mu.Unlock()
	return c.Storage.Put(ctx, e)
}

func (c *countingStorage) List(ctx context.Context, p string) ([]string, error) {
	c.mu.Lock()
	c.lsts++
	c.mu.Unlock()
	return c.Storage.List(ctx, p)
}

func (c *countingStorage) counts() (gets, puts, lists int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets, c.puts, c.lsts
}

// deliverInProcess sends one delivery to hooks/<id> as Vault would hand it
// to the plugin.
func deliverInProcess(t *testing.T, b *backend, s logical.Storage, id string, d receivertest.Delivery) (*logical.Response, error) {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(d.Body, &body); err != nil {
		t.Fatal(err)
	}
	return b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation, Path: "hooks/" + id, Data: body, Headers: d.VaultHeaders(),
		Storage: s, MountPoint: "flant_gitops/", Unauthenticated: true,
	})
}

func receiverID(t *testing.T, resp *logical.Response) string {
	t.Helper()
	u := fmt.Sprint(resp.Data["url_path"])
	return u[strings.LastIndex(u, "/")+1:]
}

// Whoever reaches the unauthenticated path without a receiver's URL costs
// the plugin no storage: guessing ids reads nothing.
func TestUnknownReceiversReadNoStorage(t *testing.T) {
	b, mem := newTestBackend(t, nil, nil)
	configReq(t, b, mem, logical.UpdateOperation, "configure", minimalConfig())
	for _, name := range []string{"github", "gitlab"} {
		configReq(t, b, mem, logical.UpdateOperation, "configure/receiver/"+name, map[string]any{"provider": name})
	}
	s := &countingStorage{Storage: mem}
	d := receivertest.Push(t, receiver.GitHub, "refs/heads/main", strings.Repeat("c", 40), "")
	for i := range 200 {
		id := fmt.Sprintf("%064x", i)
		if _, err := deliverInProcess(t, b, s, id, d); err == nil || !strings.Contains(err.Error(), "no receiver") {
			t.Fatalf("a guessed id answered %v", err)
		}
	}
	gets, puts, lists := s.counts()
	t.Logf("200 guessed ids: %d storage reads, %d lists, %d writes", gets, lists, puts)
	if gets+lists > 10 || puts != 0 {
		t.Errorf("200 guessed ids cost %d storage reads, %d lists and %d writes; want a bounded load of the receivers and no write", gets, lists, puts)
	}
}

// Whoever holds a receiver's URL (it is in Vault's audit log) but not its
// token, or sends deliveries whose outcomes alternate, cannot make every
// delivery a storage write.
func TestDeliveriesWriteStorageAtMostEveryPeriod(t *testing.T) {
	b, mem := newTestBackend(t, nil, nil)
	configReq(t, b, mem, logical.UpdateOperation, "configure", minimalConfig())
	gl := configReq(t, b, mem, logical.UpdateOperation, "configure/receiver/gitlab", map[string]any{"provider": "gitlab"})
	id, token := receiverID(t, gl), fmt.Sprint(gl.Data["token"])
	s := &countingStorage{Storage: mem}
	for i := range 100 {
		tok := token
		ref := "refs/heads/staging" // ignored: another branch
		if i%2 == 1 {
			tok = "wrong" // refused
		}
		_, _ = deliverInProcess(t, b, s, id, receivertest.Push(t, receiver.GitLab, ref, strings.Repeat("c", 40), tok))
	}
	_, puts, _ := s.counts()
	if puts > 1 {
		t.Errorf("100 deliveries with alternating outcomes made %d storage writes, want at most one per %s", puts, deliveryPersistEvery)
	}
	st := configReq(t, b, mem, logical.ReadOperation, "configure/receiver/gitlab", nil)
	if last, _ := st.Data["last_delivery"].(map[string]any); !strings.Contains(fmt.Sprint(last["outcome"]), "does not hold the receiver's token") {
		t.Errorf("the read does not show the last delivery (a wrong token): %v", st.Data["last_delivery"])
	}
}
