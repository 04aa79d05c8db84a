package receiver_test

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/flant/flant_gitops/backend/receiver"
	"github.com/flant/flant_gitops/backend/receiver/receivertest"
	"github.com/flant/flant_gitops/gitwatch"
)

const commit = "9fceb02d0ae598e95dc970b74767f19372d61af8"

// vaultData is what Vault hands the plugin of a body: the JSON object, or
// the fields of a form.
func vaultData(t *testing.T, d receivertest.Delivery) map[string]any {
	t.Helper()
	if d.ContentType == "application/x-www-form-urlencoded" {
		v, err := url.ParseQuery(string(d.Body))
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]any{}
		for k := range v {
			out[k] = v.Get(k)
		}
		return out
	}
	var out map[string]any
	if err := json.Unmarshal(d.Body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseEachProvidersPush(t *testing.T) {
	for _, p := range receiver.Providers() {
		refs := []string{"refs/heads/main", "refs/heads/staging", "refs/tags/v1.2.3", gitwatch.SignatureTag, gitwatch.NotesRef}
		if p == receiver.Bitbucket {
			// Its payload names branches and tags only, never other refs.
			refs = refs[:4]
		}
		for _, ref := range refs {
			d := receivertest.Push(t, p, ref, commit, "tok")
			deliveries := []receivertest.Delivery{d}
			if p == receiver.GitHub {
				deliveries = append(deliveries, d.FormEncoded())
			}
			for _, d := range deliveries {
				t.Run(d.Name, func(t *testing.T) {
					got, err := receiver.Parse(p, d.VaultHeaders(), vaultData(t, d))
					if err != nil {
						t.Fatalf("Parse: %v", err)
					}
					if !contains(p.DefaultEvents(), got.Event) && !(p == receiver.GitLab && got.Event == "Tag Push Hook") {
						t.Errorf("event %q, want one of %v", got.Event, p.DefaultEvents())
					}
					c, ok, why := got.ForBranch("main")
					signatures := ref == gitwatch.SignatureTag || ref == gitwatch.NotesRef
					switch {
					case signatures && (!ok || c != ""):
						t.Errorf("a push to %s: ForBranch(main) = %q, %v (%s); want a wake naming no commit (a new signature may make HEAD runnable)", ref, c, ok, why)
					case signatures:
					case ref == "refs/heads/main" && (!ok || c != commit):
						t.Errorf("ForBranch(main) = %q, %v (%s); want %s", c, ok, why, commit)
					case ref != "refs/heads/main" && ok:
						t.Errorf("a push to %s woke the watch of main", ref)
					case ref != "refs/heads/main" && !strings.Contains(why, ref):
						t.Errorf("the refusal %q does not name the ref %s", why, ref)
					}
				})
			}
		}
	}
}

func TestParsePings(t *testing.T) {
	for _, p := range []receiver.Provider{receiver.GitHub, receiver.BitbucketServer} {
		d := receivertest.Ping(t, p)
		got, err := receiver.Parse(p, d.VaultHeaders(), vaultData(t, d))
		if err != nil || !got.Ping {
			t.Errorf("%s: Parse = %+v, %v; want a ping", p, got, err)
		}
	}
}

func TestParseRefusesMalformedPayloads(t *testing.T) {
	tests := []struct {
		name   string
		p      receiver.Provider
		header string
		event  string
		data   map[string]any
	}{
		{"github push without ref", receiver.GitHub, "X-GitHub-Event", "push", map[string]any{"after": commit}},
		{"github ref not a string", receiver.GitHub, "X-GitHub-Event", "push", map[string]any{"ref": 7}},
		{"github form payload not JSON", receiver.GitHub, "X-GitHub-Event", "push", map[string]any{"payload": "{nope"}},
		{"gitlab push without ref", receiver.GitLab, "X-Gitlab-Event", "Push Hook", map[string]any{}},
		{"bitbucket without changes", receiver.Bitbucket, "X-Event-Key", "repo:push", map[string]any{"push": "x"}},
		{"bitbucket server without changes", receiver.BitbucketServer, "X-Event-Key", "repo:refs_changed", map[string]any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := receiver.Parse(tt.p, map[string][]string{tt.header: {tt.event}}, tt.data)
			if !errors.Is(err, receiver.ErrPayload) {
				t.Errorf("Parse = %v, want ErrPayload", err)
			}
		})
	}
}

func TestParseDeletedBranchNamesNoCommit(t *testing.T) {
	d := receivertest.Push(t, receiver.GitHub, "refs/heads/main", receiver.NullCommit, "")
	got, err := receiver.Parse(receiver.GitHub, d.VaultHeaders(), vaultData(t, d))
	if err != nil {
		t.Fatal(err)
	}
	if c, ok, _ := got.ForBranch("main"); !ok || c != "" {
		t.Errorf("a deleted branch: ForBranch = %q, %v; want a wake naming no commit", c, ok)
	}
}

func TestGenericWithoutRefWakesAnyBranch(t *testing.T) {
	got, err := receiver.Parse(receiver.Generic, nil, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := got.ForBranch("main"); !ok {
		t.Error("a generic delivery without a ref did not wake the watch")
	}
}

func TestSecrets(t *testing.T) {
	a, err := receiver.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := receiver.NewSecret()
	if a == b || !receiver.WellFormedID(a) {
		t.Fatalf("secrets %q, %q", a, b)
	}
	d := receiver.Digest(a)
	tests := []struct {
		presented, digest string
		want              bool
	}{
		{a, d, true},
		{b, d, false},
		{"", d, false},
		{a, "not hex", false},
		{a, "", false},
	}
	for _, tt := range tests {
		if got := receiver.SameSecret(tt.presented, tt.digest); got != tt.want {
			t.Errorf("SameSecret(%q, %q) = %v, want %v", tt.presented, tt.digest, got, tt.want)
		}
	}
	for _, bad := range []string{"", a[:63], a + "0", strings.ToUpper(a[:2]) + "zz" + a[4:]} {
		if receiver.WellFormedID(bad) {
			t.Errorf("WellFormedID(%q) = true", bad)
		}
	}
}

func TestSizeOver(t *testing.T) {
	big := map[string]any{"commits": []any{map[string]any{"message": strings.Repeat("x", 2000)}}}
	if receiver.SizeOver(big, 4096) {
		t.Error("2 kB counted as over 4 kB")
	}
	if !receiver.SizeOver(big, 1024) {
		t.Error("2 kB not counted as over 1 kB")
	}
}

func TestPassthroughHeadersCoverEveryProvider(t *testing.T) {
	h := receiver.PassthroughHeaders()
	for _, want := range []string{"X-GitHub-Event", "X-Gitlab-Event", "X-Gitlab-Token", "X-Gitea-Event", "X-Event-Key", "X-Flant-Gitops-Token"} {
		if !contains(h, want) {
			t.Errorf("PassthroughHeaders %v lacks %s", h, want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
