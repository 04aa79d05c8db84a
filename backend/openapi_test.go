package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/testhelpers/schema"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/receiver"
	"github.com/flant/flant_gitops/backend/receiver/receivertest"
	"github.com/flant/flant_gitops/backend/watch"
	"github.com/flant/flant_gitops/container"
	"github.com/flant/flant_gitops/container/dockertest"
	"github.com/flant/flant_gitops/gitwatch/gittest"
	"github.com/flant/flant_gitops/gitwatch/pgptest"
	"github.com/flant/flant_gitops/internal/waittest"
)

// TestAPIReference fails when backend/API.md is not what the path
// definitions generate, so the published reference cannot go stale.
func TestAPIReference(t *testing.T) {
	want, err := APIReference(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("API.md")
	if err != nil {
		t.Fatalf("reading the committed reference: %v; create it with `%s`", err, APIReferenceCommand)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("backend/API.md is stale (%s); regenerate it with `%s` and commit it", firstDiff(got, want), APIReferenceCommand)
	}
	// Every operation id and field of the document is in the reference.
	doc, err := OpenAPI(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range apiOps(doc) {
		if !bytes.Contains(want, []byte("`"+o.op.OperationID+"`")) {
			t.Errorf("the reference lacks operation %s", o.op.OperationID)
		}
	}
	for _, p := range newSchemaTestBackend(t).Paths {
		for name, f := range p.Fields {
			row := fmt.Sprintf("| `%s` | ", name)
			if !bytes.Contains(want, []byte(row)) {
				t.Errorf("the reference lacks field %s of %s", name, p.Pattern)
			}
			if f.DisplayAttrs != nil && f.DisplayAttrs.Sensitive && !regexp.MustCompile(regexp.QuoteMeta(row)+`[^\n]*\| yes \| [^|\n]*\|\n`).Match(want) {
				t.Errorf("the reference does not mark %s of %s sensitive", name, p.Pattern)
			}
		}
	}
}

// firstDiff names the first line where the committed file and the
// generated one differ.
func firstDiff(got, want []byte) string {
	g, w := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d is %q, the code generates %q", i+1, gl, wl)
		}
	}
	return "same lines"
}

var operationIDStyle = regexp.MustCompile(`^flant-gitops(-[a-z0-9]+)+$`)

// TestOperationIDs holds the one operation-id style: every path names its
// prefix and a suffix or verb (DisplayAttrs), so no id is derived from the
// path (underscores, "-name", "-id"), and the ids are kebab-case and unique.
func TestOperationIDs(t *testing.T) {
	b := newSchemaTestBackend(t)
	for _, p := range b.Paths {
		d := p.DisplayAttrs
		if d == nil || d.OperationPrefix != apiPrefix || (d.OperationSuffix == "" && d.OperationVerb == "") {
			t.Errorf("path %s: DisplayAttrs must give OperationPrefix %q and an OperationSuffix or OperationVerb, got %+v", p.Pattern, apiPrefix, d)
		}
	}
	doc, err := OpenAPI(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, o := range apiOps(doc) {
		id := o.op.OperationID
		where := o.method + " " + o.path
		t.Logf("%-48s %s", where, id)
		if !operationIDStyle.MatchString(id) {
			t.Errorf("%s: operation id %q is not flant-gitops-<verb>-<suffix> in kebab-case", where, id)
		}
		for _, leftover := range []string{"-name", "-id", "-configure-"} {
			if strings.HasSuffix(id, leftover) || strings.Contains(id, leftover+"-") {
				t.Errorf("%s: operation id %q carries the path-derived %q", where, id, leftover)
			}
		}
		if o.verb == "list" && !strings.HasPrefix(id, apiPrefix+"-list-") {
			t.Errorf("%s: list operation id %q does not start with %s-list-", where, id, apiPrefix)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("operation id %q is used by %s and %s", id, other, where)
		}
		seen[id] = where
	}
	if len(seen) == 0 {
		t.Fatal("the OpenAPI document has no operations")
	}
}

// newSchemaTestBackend is a backend for reading path definitions only.
func newSchemaTestBackend(t *testing.T) *backend {
	b, _ := newTestBackend(t, nil, nil)
	return b
}

// responseSchemaOf is the declared answer of one operation: the 200 schema,
// or nil with noContent true for a 204.
func responseSchemaOf(p *framework.Path, op logical.Operation) (ok *framework.Response, noContent bool, err error) {
	h, found := p.Operations[op]
	if !found {
		return nil, false, fmt.Errorf("%s has no %s operation", p.Pattern, op)
	}
	rs := h.Properties().Responses
	if r := rs[http.StatusOK]; len(r) > 0 {
		if isRaw(&r[0]) {
			return &r[0], false, nil
		}
		if len(r[0].Fields) == 0 {
			return nil, false, fmt.Errorf("%s %s: the 200 response declares no fields", p.Pattern, op)
		}
		return &r[0], false, nil
	}
	if len(rs[http.StatusNoContent]) > 0 {
		return nil, true, nil
	}
	return nil, false, fmt.Errorf("%s %s declares no response (200 with fields, or 204)", p.Pattern, op)
}

// checkResponse validates a real answer against its declared schema,
// strictly: no field outside the schema, every Required field present, and
// each value of the JSON kind its type says (null is allowed for arrays and
// objects only).
func checkResponse(p *framework.Path, op logical.Operation, resp *logical.Response) error {
	want, noContent, err := responseSchemaOf(p, op)
	if err != nil {
		return err
	}
	if noContent {
		if resp != nil && len(resp.Data) > 0 {
			return fmt.Errorf("%s %s declares 204 but answered data %v", p.Pattern, op, resp.Data)
		}
		return nil
	}
	if resp == nil || len(resp.Data) == 0 {
		return fmt.Errorf("%s %s declares a 200 with fields but answered no data", p.Pattern, op)
	}
	if isRaw(want) {
		return checkRawResponse(p, op, want, resp)
	}
	raw, err := json.Marshal(resp.Data)
	if err != nil {
		return err
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		return err
	}
	fd := framework.FieldData{Raw: data, Schema: want.Fields}
	if err := fd.ValidateStrict(); err != nil {
		return fmt.Errorf("%s %s: %w", p.Pattern, op, err)
	}
	for name, v := range data {
		if err := jsonKindFits(want.Fields[name].Type, v); err != nil {
			return fmt.Errorf("%s %s: field %q: %w", p.Pattern, op, name, err)
		}
	}
	return nil
}

// isRaw: the answer is a raw body of another media type (Vault writes it as
// is), not JSON data.
func isRaw(r *framework.Response) bool {
	return r.MediaType != "" && r.MediaType != "application/json"
}

// checkRawResponse validates a raw answer: exactly the status, content type
// (of the declared media type) and a body, as Vault's raw-response writer
// wants them.
func checkRawResponse(p *framework.Path, op logical.Operation, want *framework.Response, resp *logical.Response) error {
	for k := range resp.Data {
		switch k {
		case logical.HTTPContentType, logical.HTTPStatusCode, logical.HTTPRawBody:
		default:
			return fmt.Errorf("%s %s declares a raw %s answer but answered field %q", p.Pattern, op, want.MediaType, k)
		}
	}
	if ct, _ := resp.Data[logical.HTTPContentType].(string); !strings.HasPrefix(ct, want.MediaType) {
		return fmt.Errorf("%s %s: content type %q, want %s", p.Pattern, op, ct, want.MediaType)
	}
	if code, _ := resp.Data[logical.HTTPStatusCode].(int); code != http.StatusOK {
		return fmt.Errorf("%s %s: raw status %v, want 200", p.Pattern, op, resp.Data[logical.HTTPStatusCode])
	}
	switch body := resp.Data[logical.HTTPRawBody].(type) {
	case []byte:
		if len(body) > 0 {
			return nil
		}
	case string:
		if body != "" {
			return nil
		}
	}
	return fmt.Errorf("%s %s: raw answer without a body", p.Pattern, op)
}

func jsonKindFits(ft framework.FieldType, v any) error {
	var ok bool
	switch ft {
	case framework.TypeString, framework.TypeLowerCaseString, framework.TypeNameString:
		_, ok = v.(string)
	case framework.TypeInt, framework.TypeInt64, framework.TypeFloat:
		_, ok = v.(float64)
	case framework.TypeBool:
		_, ok = v.(bool)
	case framework.TypeMap:
		_, ok = v.(map[string]any)
		ok = ok || v == nil
	case framework.TypeSlice, framework.TypeStringSlice, framework.TypeCommaStringSlice:
		_, ok = v.([]any)
		ok = ok || v == nil
	default:
		return fmt.Errorf("no JSON kind check for field type %s", ft)
	}
	if !ok {
		return fmt.Errorf("value %#v is not a JSON %s", v, ft)
	}
	return nil
}

// TestResponseSchemaCheckFails shows the check refuses answers that leave
// their schema.
func TestResponseSchemaCheckFails(t *testing.T) {
	b := newSchemaTestBackend(t)
	status, configure := b.Route("status"), b.Route("configure")
	good := func() map[string]any {
		return map[string]any{"started": true, "message": "poll started"}
	}
	tests := []struct {
		name string
		path *framework.Path
		op   logical.Operation
		resp *logical.Response
		want string
	}{
		{"field outside the schema", b.Route("poll"), logical.UpdateOperation, &logical.Response{Data: merge(good(), map[string]any{"extra": 1})}, `"extra"`},
		{"required field missing", b.Route("poll"), logical.UpdateOperation, &logical.Response{Data: map[string]any{"started": true}}, `missing required field "message"`},
		{"wrong kind", b.Route("poll"), logical.UpdateOperation, &logical.Response{Data: merge(good(), map[string]any{"started": "yes"})}, `"started"`},
		{"data on a 204", configure, logical.DeleteOperation, &logical.Response{Data: map[string]any{"x": 1}}, "declares 204"},
		{"nothing on a 200", status, logical.ReadOperation, nil, "answered no data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkResponse(tc.path, tc.op, tc.resp)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("checkResponse = %v, want an error with %q", err, tc.want)
			}
		})
	}
	if err := checkResponse(b.Route("poll"), logical.UpdateOperation, &logical.Response{Data: good()}); err != nil {
		t.Fatalf("a good answer was refused: %v", err)
	}
}

func merge(a, b map[string]any) map[string]any {
	for k, v := range b {
		a[k] = v
	}
	return a
}

// schemaCoverage records which operation of which path answered for real.
type schemaCoverage map[string]bool

func (c schemaCoverage) key(p *framework.Path, op logical.Operation) string {
	// Route answers the compiled path, whose pattern gained ^ and $.
	return strings.TrimSuffix(strings.TrimPrefix(p.Pattern, "^"), "$") + " " + string(op)
}

// validate sends one request (with Vault's existence check turning a write
// into create or update), requires success and checks the answer against
// both the SDK's strict validator and checkResponse.
func (c schemaCoverage) validate(t *testing.T, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any, entityID string) *logical.Response {
	t.Helper()
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: s, MountPoint: "flant_gitops/", EntityID: entityID, ID: "req-" + path}
	return c.validateRequest(t, b, req)
}

// validateRequest is validate for a request made by the caller (headers,
// no entity).
func (c schemaCoverage) validateRequest(t *testing.T, b *backend, req *logical.Request) *logical.Response {
	t.Helper()
	op, path := req.Operation, req.Path
	p := b.Route(path)
	if p == nil {
		t.Fatalf("no path answers %s", path)
	}
	if op == logical.UpdateOperation && p.ExistenceCheck != nil {
		_, exists, err := b.HandleExistenceCheck(context.Background(), req)
		if err != nil {
			t.Fatalf("%s %s: existence check: %v", op, path, err)
		}
		if !exists {
			req.Operation = logical.CreateOperation
		}
	}
	resp, err := b.HandleRequest(context.Background(), req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Operation, path, err)
	}
	if resp != nil && resp.IsError() {
		t.Fatalf("%s %s: error response: %v", req.Operation, path, resp.Error())
	}
	if err := checkResponse(p, req.Operation, resp); err != nil {
		t.Fatal(err)
	}
	if want, noContent, _ := responseSchemaOf(p, req.Operation); !noContent {
		schema.ValidateResponse(t, want, resp, true)
	}
	c[c.key(p, req.Operation)] = true
	return resp
}

// TestResponseSchemas runs every operation of every path in-process and
// validates each real answer against its declared response schema: the
// configuration paths on in-memory storage, a real patch pushed to a real
// git server, and status, runs, log, poll and cancel around a run in
// progress.
func TestResponseSchemas(t *testing.T) {
	t.Setenv(cacheDirEnv, t.TempDir())
	cov := schemaCoverage{}

	// Every path declares an answer for every operation, and no answer
	// has room for a secret field of its path: with the strict check below,
	// no read can return one.
	all := newSchemaTestBackend(t)
	for _, p := range all.Paths {
		for op := range p.Operations {
			want, _, err := responseSchemaOf(p, op)
			if err != nil {
				t.Error(err)
				continue
			}
			for name, f := range p.Fields {
				if f.DisplayAttrs != nil && f.DisplayAttrs.Sensitive && want != nil && want.Fields[name] != nil {
					t.Errorf("%s %s: the response schema has the secret field %q", p.Pattern, op, name)
				}
			}
		}
	}

	t.Run("configuration and patch", func(t *testing.T) {
		const accessor = "auth_jwt_0a1b2c3d"
		ci := &logical.Entity{
			ID: "ent-1", Name: "entity_ci",
			Aliases: []*logical.Alias{{MountType: "jwt", MountAccessor: accessor, Name: "my-group/my-project", Metadata: map[string]string{"project_path": "my-group/my-project"}}},
		}
		b, s := newTestBackend(t, ci, nil)
		srv := gittest.NewServer(t)
		remote := srv.NewRepo(t, "infra")
		remote.Commit(t, map[string]string{"my-group/my-project/release.yml": "spec:\n  values:\n    image:\n      tag: 1.2.4\n"}, gittest.Message("initial"))
		alice, bob := pgptest.NewKey(t, "Alice"), pgptest.NewKey(t, "Bob")
		bobSSH := sshPublicKeyLine(t)
		engine := dockertest.NewTLSProxy(t)
		commit := strings.Repeat("a", 40)
		setTag := func(tag string) []any {
			return []any{map[string]any{"path": "my-group/my-project/release.yml", "setField": map[string]any{"field": "spec.values.image.tag", "value": tag}}}
		}

		steps := []struct {
			op   logical.Operation
			path string
			data map[string]any
		}{
			{logical.UpdateOperation, "configure", minimalConfig()},
			{logical.UpdateOperation, "configure", map[string]any{"git_branch_name": "production"}},
			{logical.ReadOperation, "configure", nil},
			{logical.UpdateOperation, "configure_vault_access", vaultAccessData()},
			{logical.UpdateOperation, "configure_vault_access", map[string]any{"secret_id": "second"}},
			{logical.ReadOperation, "configure_vault_access", nil},
			{logical.UpdateOperation, "configure/docker_engine", engineFields(engine)},
			{logical.UpdateOperation, "configure/docker_engine", map[string]any{"tls_server_name": "localhost", "client_key": string(engine.ClientKeyPEM)}},
			{logical.ReadOperation, "configure/docker_engine", nil},
			{logical.UpdateOperation, "configure/commit_status", map[string]any{"provider": "github", "token": "ghp_0123456789abcdef", "repository": "acme/deploy"}},
			{logical.UpdateOperation, "configure/commit_status", map[string]any{"target_url_template": "https://dash.example.com/runs/{{run}}"}},
			{logical.ReadOperation, "configure/commit_status", nil},
			{logical.UpdateOperation, "configure/git_credential", map[string]any{"username": "oauth2", "password": "glpat-very-secret"}},
			{logical.UpdateOperation, "configure/last_successful_commit", map[string]any{"commit": commit}},
			{logical.ReadOperation, "configure/last_successful_commit", nil},
			{logical.ReadOperation, "configure/policy", nil},
			{logical.UpdateOperation, "configure/policy", map[string]any{"trusted_auth_mount_accessors": accessor}},
			{logical.ReadOperation, "configure/policy", nil},
			{logical.UpdateOperation, "configure/repository/infra", map[string]any{"url": remote.URL(), "username": srv.Username(), "password": srv.Password()}},
			{logical.UpdateOperation, "configure/repository/infra", map[string]any{"default_commit_message": "Bump by CI"}},
			{logical.ReadOperation, "configure/repository/infra", nil},
			{logical.ListOperation, "configure/repository/", nil},
			{logical.ReadOperation, "configure/signing_key", nil},
			{logical.UpdateOperation, "configure/signing_key/rotate", nil},
			{logical.ReadOperation, "configure/signing_key", nil},
			{logical.UpdateOperation, "configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.PublicArmored(t)}},
			{logical.UpdateOperation, "configure/trusted_pgp_public_key/alice", map[string]any{"public_key": alice.PublicArmored(t)}},
			{logical.ReadOperation, "configure/trusted_pgp_public_key/alice", nil},
			{logical.ListOperation, "configure/trusted_pgp_public_key/", nil},
			{logical.UpdateOperation, "configure/signer/bob", map[string]any{"pgp_public_keys": []any{bob.PublicArmored(t)}, "ssh_public_keys": []any{bobSSH}}},
			{logical.UpdateOperation, "configure/signer/bob", map[string]any{"revoked_keys": []any{strings.Repeat("AB", 20)}}},
			{logical.ReadOperation, "configure/signer/bob", nil},
			{logical.ListOperation, "configure/signer/", nil},
			{logical.UpdateOperation, "configure/signature_rule/prod", map[string]any{"paths": "prod/**", "required_signers": 1, "signers": "bob"}},
			{logical.UpdateOperation, "configure/signature_rule/prod", map[string]any{"required_signers": 1}},
			{logical.ReadOperation, "configure/signature_rule/prod", nil},
			{logical.ListOperation, "configure/signature_rule/", nil},
			{logical.UpdateOperation, "configure/vault_request/db", map[string]any{"path": "secret/data/app"}},
			{logical.UpdateOperation, "configure/vault_request/db", map[string]any{"method": "post"}},
			{logical.ReadOperation, "configure/vault_request/db", nil},
			{logical.ListOperation, "configure/vault_request/", nil},
			{logical.UpdateOperation, "patch/infra", map[string]any{"commands": setTag("1.2.5"), "dry_run": true}},
			{logical.UpdateOperation, "patch/infra", map[string]any{"commands": setTag("1.2.5"), "commit": map[string]any{"message": "Bump image to 1.2.5"}}},
			{logical.UpdateOperation, "patch/infra", map[string]any{"commands": setTag("1.2.5")}},
			{logical.ReadOperation, "status", nil},
			{logical.DeleteOperation, "configure/vault_request/db", nil},
			{logical.DeleteOperation, "configure/trusted_pgp_public_key/alice", nil},
			{logical.DeleteOperation, "configure/signature_rule/prod", nil},
			{logical.DeleteOperation, "configure/signer/bob", nil},
			{logical.DeleteOperation, "configure/repository/infra", nil},
			{logical.DeleteOperation, "configure/policy", nil},
			{logical.DeleteOperation, "configure/last_successful_commit", nil},
			{logical.DeleteOperation, "configure/git_credential", nil},
			{logical.DeleteOperation, "configure_vault_access", nil},
			{logical.DeleteOperation, "configure/docker_engine", nil},
			{logical.DeleteOperation, "configure/commit_status", nil},
			{logical.DeleteOperation, "configure", nil},
		}
		for _, st := range steps {
			resp := cov.validate(t, b, s, st.op, st.path, st.data, ci.ID)
			if st.path == "patch/infra" && st.data["dry_run"] == nil && st.data["commit"] != nil {
				// The answer names the commit the remote now has.
				if got := remote.Head(t); resp.Data["commit"] != got {
					t.Errorf("patch answered commit %v, the remote head is %s", resp.Data["commit"], got)
				}
			}
		}
	})

	t.Run("receivers and a delivery", func(t *testing.T) {
		b, s := newTestBackend(t, nil, nil)
		configReq(t, b, s, logical.UpdateOperation, "configure", minimalConfig())
		created := cov.validate(t, b, s, logical.UpdateOperation, "configure/receiver/github", map[string]any{"provider": "github"}, "")
		cov.validate(t, b, s, logical.UpdateOperation, "configure/receiver/github", map[string]any{"events": "push,ping"}, "")
		cov.validate(t, b, s, logical.ReadOperation, "configure/receiver/github", nil, "")
		cov.validate(t, b, s, logical.ListOperation, "configure/receiver/", nil, "")
		rotated := cov.validate(t, b, s, logical.UpdateOperation, "configure/receiver/github/rotate", nil, "")
		if created.Data["url_path"] == rotated.Data["url_path"] {
			t.Fatalf("rotate kept the URL %v", created.Data["url_path"])
		}
		urlPath := fmt.Sprint(rotated.Data["url_path"])
		d := receivertest.Push(t, receiver.GitHub, "refs/heads/main", strings.Repeat("c", 40), "")
		var body map[string]any
		if err := json.Unmarshal(d.Body, &body); err != nil {
			t.Fatal(err)
		}
		cov.validateRequest(t, b, &logical.Request{
			Operation: logical.UpdateOperation, Path: strings.TrimPrefix(urlPath, "/v1/flant_gitops/"), Data: body,
			Headers: d.VaultHeaders(), Storage: s, MountPoint: "flant_gitops/", Unauthenticated: true,
		})
		cov.validate(t, b, s, logical.ReadOperation, "status", nil, "")
		cov.validate(t, b, s, logical.ReadOperation, "metrics", nil, "")
		cov.validate(t, b, s, logical.DeleteOperation, "configure/receiver/github", nil, "")
	})

	t.Run("notification endpoints", func(t *testing.T) {
		b, s := newTestBackend(t, nil, nil)
		cov.validate(t, b, s, logical.UpdateOperation, "configure/notification/chat", map[string]any{"url": "https://relay.example.com/hook"}, "")
		cov.validate(t, b, s, logical.UpdateOperation, "configure/notification/chat", map[string]any{"events": "run.finished,commit.refused"}, "")
		cov.validate(t, b, s, logical.ReadOperation, "configure/notification/chat", nil, "")
		cov.validate(t, b, s, logical.ListOperation, "configure/notification/", nil, "")
		cov.validate(t, b, s, logical.UpdateOperation, "configure/notification/chat/rotate", map[string]any{"overlap": "1h"}, "")
		cov.validate(t, b, s, logical.ReadOperation, "status", nil, "")
		cov.validate(t, b, s, logical.DeleteOperation, "configure/notification/chat", nil, "")
	})

	t.Run("watch: status, runs, log, poll, cancel", func(t *testing.T) {
		b, s := newTestBackend(t, nil, nil)
		srv := gittest.NewServer(t)
		repo := srv.NewRepo(t, "ops")
		repo.Commit(t, map[string]string{"deploy.sh": "echo deploy\n"})
		configReq(t, b, s, logical.UpdateOperation, "configure", map[string]any{
			"git_repo_url": repo.URL(), "docker_image": "sha256:" + strings.Repeat("1", 64), "commands": []string{"sh /git/deploy.sh"},
			"required_number_of_verified_signatures_on_commit": 0,
		})
		configReq(t, b, s, logical.UpdateOperation, "configure/git_credential", map[string]any{"username": srv.Username(), "password": srv.Password()})
		// The mount's own worker on real git, with a runner whose container
		// runs until canceled.
		runner := &blockingRunner{started: make(chan container.Spec, 1)}
		deps := b.watchDeps()
		deps.NewRunner = func(context.Context) (container.Runner, error) { return runner, nil }
		b.watch = watch.New(b.Backend.Logger, deps)
		b.watch.Start(watchStorage{s})
		defer b.watch.Stop(context.Background())
		spec := <-runner.started
		id := spec.Labels[watch.LabelRun]

		status := cov.validate(t, b, s, logical.ReadOperation, "status", nil, "")
		if cur, _ := status.Data["current_run"].(map[string]any); cur["id"] != id {
			t.Errorf("status current_run = %v, want run %s", status.Data["current_run"], id)
		}
		cov.validate(t, b, s, logical.ListOperation, "runs/", nil, "")
		cov.validate(t, b, s, logical.ReadOperation, "runs/"+id, nil, "")
		cov.validate(t, b, s, logical.ReadOperation, "runs/"+id+"/log", map[string]any{"offset": 0}, "")
		cov.validate(t, b, s, logical.UpdateOperation, "poll", nil, "")
		cov.validate(t, b, s, logical.UpdateOperation, "runs/"+id+"/cancel", nil, "")
		waittest.Until(t, func() bool {
			st, err := b.watch.State(context.Background(), watchStorage{s})
			return err == nil && st.CurrentRunID == ""
		})
		cov.validate(t, b, s, logical.ReadOperation, "status", nil, "")
		cov.validate(t, b, s, logical.ReadOperation, "runs/"+id, nil, "")

		// A run left running by a node on another Docker engine: the next
		// worker fences it, and status says so.
		b.watch.Stop(context.Background())
		const leftID = "20260301T095900.000000Z-fe0ced"
		left := fmt.Sprintf(`{"id":%q,"commit":%q,"status":"running","attempt":1,"created_at":%q,"started_at":%q,"deadline":%q,"engine_id":"engine-of-another-node"}`,
			leftID, strings.Repeat("c", 40), time.Now().Format(time.RFC3339Nano), time.Now().Format(time.RFC3339Nano), time.Now().Add(time.Hour).Format(time.RFC3339Nano))
		if err := s.Put(context.Background(), &logical.StorageEntry{Key: "runs/" + leftID, Value: []byte(left)}); err != nil {
			t.Fatal(err)
		}
		b.watch = watch.New(b.Backend.Logger, deps)
		b.watch.Start(watchStorage{s})
		defer b.watch.Stop(context.Background())
		waittest.Until(t, func() bool {
			st, err := b.watch.State(context.Background(), watchStorage{s})
			return err == nil && st.Fence != nil
		})
		status = cov.validate(t, b, s, logical.ReadOperation, "status", nil, "")
		if f, _ := status.Data["fenced"].(map[string]any); f["run_id"] != leftID || f["engine_id"] != "engine-of-another-node" || f["node_engine_id"] != "engine-of-the-test" {
			t.Errorf("status while fenced: %v", status.Data)
		}
		cov.validate(t, b, s, logical.ReadOperation, "runs/"+leftID, nil, "")

		// A rule the change touches, and the signatures of HEAD.
		configReq(t, b, s, logical.UpdateOperation, "configure/signature_rule/all", map[string]any{"paths": "**", "required_signers": 1})
		sig := cov.validate(t, b, s, logical.ReadOperation, "signatures/"+repo.Head(t), nil, "")
		if rules, _ := sig.Data["rules"].([]map[string]any); len(rules) != 1 || sig.Data["ok"] != false {
			t.Errorf("signatures of HEAD: %v", sig.Data)
		}
	})

	var missing []string
	for _, p := range all.Paths {
		for op := range p.Operations {
			if !cov[cov.key(p, op)] {
				missing = append(missing, cov.key(p, op))
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no real answer was validated for: %s", strings.Join(missing, "; "))
	}
	t.Logf("validated real answers of %d operations", len(cov))
}

// blockingRunner is a Docker engine whose containers run until canceled;
// started receives each one's spec.
type blockingRunner struct{ started chan container.Spec }

func (r *blockingRunner) Run(ctx context.Context, spec container.Spec) (container.Result, error) {
	r.started <- spec
	<-ctx.Done()
	return container.Result{Reason: container.ReasonCanceled, ContainerID: "c1"}, nil
}

func (r *blockingRunner) Find(context.Context, map[string]string) ([]container.Found, error) {
	return nil, nil
}

func (r *blockingRunner) Attach(context.Context, string, io.Writer, time.Time, time.Duration) (container.Result, error) {
	return container.Result{}, errors.New("blockingRunner has no containers to attach to")
}

func (r *blockingRunner) Remove(context.Context, string) error { return nil }

func (r *blockingRunner) EngineID(context.Context) (string, error) { return "engine-of-the-test", nil }
