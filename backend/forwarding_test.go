package backend

import (
	"fmt"
	"sort"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// TestForwarding lists every path and operation of the backend with its
// performance-forwarding flags. On Vault Enterprise a performance standby or
// secondary serves a request locally unless the operation forwards it: every
// operation that writes or acts must reach the active node of the primary,
// where the worker, the branch lock and the writable storage are. A path or
// operation without a row here fails, so a new one is decided on, not missed.
func TestForwarding(t *testing.T) {
	name, id := framework.GenericNameRegex("name"), framework.GenericNameRegex("id")
	rows := []struct {
		pattern string
		op      logical.Operation
		forward bool
		why     string // for reads: why they stay local or forward
	}{
		{"configure$", logical.ReadOperation, false, "replicated storage"},
		{"configure$", logical.CreateOperation, true, ""},
		{"configure$", logical.UpdateOperation, true, ""},
		{"configure$", logical.DeleteOperation, true, ""},
		{"configure_vault_access$", logical.ReadOperation, false, "replicated storage"},
		{"configure_vault_access$", logical.CreateOperation, true, ""},
		{"configure_vault_access$", logical.UpdateOperation, true, ""},
		{"configure_vault_access$", logical.DeleteOperation, true, ""},
		{"configure/docker_engine$", logical.ReadOperation, false, "replicated storage"},
		{"configure/docker_engine$", logical.CreateOperation, true, ""},
		{"configure/docker_engine$", logical.UpdateOperation, true, ""},
		{"configure/docker_engine$", logical.DeleteOperation, true, ""},
		{"configure/commit_status$", logical.ReadOperation, false, "replicated storage"},
		{"configure/commit_status$", logical.CreateOperation, true, ""},
		{"configure/commit_status$", logical.UpdateOperation, true, ""},
		{"configure/commit_status$", logical.DeleteOperation, true, ""},
		{"configure/git_credential$", logical.UpdateOperation, true, ""},
		{"configure/git_credential$", logical.DeleteOperation, true, ""},
		{"configure/last_successful_commit/?$", logical.ReadOperation, false, "replicated storage"},
		{"configure/last_successful_commit/?$", logical.UpdateOperation, true, ""},
		{"configure/last_successful_commit/?$", logical.DeleteOperation, true, ""},
		{"patch/" + framework.GenericNameRegex("repository"), logical.UpdateOperation, true, ""},
		{"configure/receiver/?$", logical.ListOperation, false, "replicated storage"},
		{"configure/receiver/" + framework.GenericNameRegex("name") + "$", logical.ReadOperation, true, "the last delivery is kept in the active node's memory"},
		{"configure/receiver/" + framework.GenericNameRegex("name") + "$", logical.CreateOperation, true, ""},
		{"configure/receiver/" + framework.GenericNameRegex("name") + "$", logical.UpdateOperation, true, ""},
		{"configure/receiver/" + framework.GenericNameRegex("name") + "$", logical.DeleteOperation, true, ""},
		{"configure/receiver/" + framework.GenericNameRegex("name") + "/rotate$", logical.UpdateOperation, true, ""},
		{"hooks/(?P<id>.+)", logical.UpdateOperation, true, ""},
		{"configure/notification/?$", logical.ListOperation, false, "replicated storage"},
		{"configure/notification/" + framework.GenericNameRegex("name") + "$", logical.ReadOperation, true, "the delivery is kept in the active node's memory"},
		{"configure/notification/" + framework.GenericNameRegex("name") + "$", logical.CreateOperation, true, ""},
		{"configure/notification/" + framework.GenericNameRegex("name") + "$", logical.UpdateOperation, true, ""},
		{"configure/notification/" + framework.GenericNameRegex("name") + "$", logical.DeleteOperation, true, ""},
		{"configure/notification/" + framework.GenericNameRegex("name") + "/rotate$", logical.UpdateOperation, true, ""},
		{"configure/policy$", logical.ReadOperation, false, "replicated storage"},
		{"configure/policy$", logical.UpdateOperation, true, ""},
		{"configure/policy$", logical.DeleteOperation, true, ""},
		{"poll/?$", logical.UpdateOperation, true, ""},
		{"configure/repository/?$", logical.ListOperation, false, "replicated storage"},
		{"configure/repository/" + name, logical.ReadOperation, false, "replicated storage"},
		{"configure/repository/" + name, logical.CreateOperation, true, ""},
		{"configure/repository/" + name, logical.UpdateOperation, true, ""},
		{"configure/repository/" + name, logical.DeleteOperation, true, ""},
		{"runs/?$", logical.ListOperation, false, "replicated storage"},
		{"runs/" + id + "/log$", logical.ReadOperation, false, "the log is read from replicated storage"},
		{"runs/" + id + "/cancel$", logical.UpdateOperation, true, ""},
		{"runs/" + id + "$", logical.ReadOperation, false, "replicated storage"},
		{"configure/signing_key$", logical.ReadOperation, true, "generates and stores the key on first use"},
		{"configure/signing_key/rotate$", logical.UpdateOperation, true, ""},
		{"status/?$", logical.ReadOperation, true, "reports the worker of the active node (busy or idle)"},
		{"metrics/?$", logical.ReadOperation, true, "the counts live in the memory of the active node, where the watch runs and patches are pushed"},
		{"configure/trusted_pgp_public_key/?$", logical.ListOperation, false, "replicated storage"},
		{"configure/trusted_pgp_public_key/(?P<name>.+)", logical.ReadOperation, false, "replicated storage"},
		{"configure/trusted_pgp_public_key/(?P<name>.+)", logical.CreateOperation, true, ""},
		{"configure/trusted_pgp_public_key/(?P<name>.+)", logical.UpdateOperation, true, ""},
		{"configure/trusted_pgp_public_key/(?P<name>.+)", logical.DeleteOperation, true, ""},
		{"configure/signer/?$", logical.ListOperation, false, "replicated storage"},
		{"configure/signer/(?P<name>.+)", logical.ReadOperation, false, "replicated storage"},
		{"configure/signer/(?P<name>.+)", logical.CreateOperation, true, ""},
		{"configure/signer/(?P<name>.+)", logical.UpdateOperation, true, ""},
		{"configure/signer/(?P<name>.+)", logical.DeleteOperation, true, ""},
		{"configure/signature_rule/?$", logical.ListOperation, false, "replicated storage"},
		{"configure/signature_rule/(?P<name>.+)", logical.ReadOperation, false, "replicated storage"},
		{"configure/signature_rule/(?P<name>.+)", logical.CreateOperation, true, ""},
		{"configure/signature_rule/(?P<name>.+)", logical.UpdateOperation, true, ""},
		{"configure/signature_rule/(?P<name>.+)", logical.DeleteOperation, true, ""},
		{"signatures/(?P<commit>.+)", logical.ReadOperation, true, "reads the active node's mirror of the branch, and may fetch into it"},
		{"configure/vault_request/?$", logical.ListOperation, false, "replicated storage"},
		{"configure/vault_request/(?P<name>.+)", logical.ReadOperation, false, "replicated storage"},
		{"configure/vault_request/(?P<name>.+)", logical.CreateOperation, true, ""},
		{"configure/vault_request/(?P<name>.+)", logical.UpdateOperation, true, ""},
		{"configure/vault_request/(?P<name>.+)", logical.DeleteOperation, true, ""},
	}

	type flags struct{ standby, secondary bool }
	got := map[string]flags{}
	for _, p := range newSchemaTestBackend(t).Paths {
		for op, h := range p.Operations {
			props := h.Properties()
			got[fmt.Sprintf("%s %s", op, p.Pattern)] = flags{props.ForwardPerformanceStandby, props.ForwardPerformanceSecondary}
		}
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%-70s standby=%-5t secondary=%t", k, got[k].standby, got[k].secondary)
	}

	seen := map[string]bool{}
	for _, r := range rows {
		k := fmt.Sprintf("%s %s", r.op, r.pattern)
		t.Run(k, func(t *testing.T) {
			if seen[k] {
				t.Fatalf("two rows for %s", k)
			}
			seen[k] = true
			switch r.op {
			case logical.CreateOperation, logical.UpdateOperation, logical.DeleteOperation:
				if !r.forward {
					t.Fatalf("%s writes or acts; it must forward", k)
				}
			default:
				if r.why == "" {
					t.Fatalf("the row of read %s must say why it forwards or stays local", k)
				}
			}
			f, ok := got[k]
			if !ok {
				t.Fatalf("the backend has no operation %s; remove the row", k)
			}
			if f.standby != r.forward || f.secondary != r.forward {
				t.Errorf("ForwardPerformanceStandby=%t ForwardPerformanceSecondary=%t, want both %t", f.standby, f.secondary, r.forward)
			}
		})
	}
	for _, k := range keys {
		if !seen[k] {
			t.Errorf("operation %s has no row in this table: decide whether it forwards (every write or action does) and add one", k)
		}
	}
}
