package backend

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/container"
)

func pathDockerEngine(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "configure/docker_engine$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "flant-gitops",
			OperationSuffix: "docker-engine-configuration",
		},
		Fields: map[string]*framework.FieldSchema{
			"host": {
				Type:        framework.TypeString,
				Description: "Address of the Docker engine the runs go to: tcp://host:2376 (always with mutual TLS: ca_cert, client_cert and client_key) or unix:///path/to/docker.sock. Required on first write.",
			},
			"ca_cert": {
				Type:        framework.TypeString,
				Description: "PEM CA certificate(s) that sign the engine's TLS certificate (dockerd --tlscacert side of the server), e.g. ca_cert=@ca.pem; only these are trusted. For tcp:// only.",
			},
			"client_cert": {
				Type:        framework.TypeString,
				Description: "PEM client certificate the engine trusts (signed by the CA of dockerd --tlscacert, extended key usage clientAuth), e.g. client_cert=@cert.pem. For tcp:// only.",
			},
			"client_key": {
				Type:         framework.TypeString,
				Description:  "PEM private key of client_cert, unencrypted, e.g. client_key=@key.pem. Write-only: never returned, seal-wrapped in storage. Must be given again whenever host, ca_cert or tls_server_name changes. For tcp:// only.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"tls_server_name": {
				Type:        framework.TypeString,
				Description: "Name to check the engine's certificate against when it is not the host in host (for example when host is an IP address). For tcp:// only.",
			},
		},
		ExistenceCheck: b.dockerEngineExists,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:  b.pathDockerEngineRead,
				Responses: okWith(dockerEngineResponseFields()),
				Summary:   "Read the configured Docker engine without its client key.",
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:                    b.pathDockerEngineWrite,
				Responses:                   noContent(),
				Summary:                     "Send the runs to this Docker engine.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathDockerEngineWrite,
				Responses:                   noContent(),
				Summary:                     "Change some fields of the Docker engine; fields not given keep their values.",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathDockerEngineDelete,
				Responses:                   noContent(),
				Summary:                     "Go back to the local Docker engine (DOCKER_HOST or the local socket).",
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    pathDockerEngineHelpSyn,
		HelpDescription: pathDockerEngineHelpDesc,
	}}
}

func (b *backend) dockerEngineExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	e, err := getDockerEngine(ctx, req.Storage)
	return e != nil, err
}

func (b *backend) pathDockerEngineRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	e, err := getDockerEngine(ctx, req.Storage)
	if err != nil || e == nil {
		return nil, err
	}
	return &logical.Response{Data: dockerEngineResponse(e)}, nil
}

// dockerEngineResponse is the allow-list of what a read shows: never the
// client key, only whether one is stored.
func dockerEngineResponse(e *dockerEngineEntry) map[string]any {
	return map[string]any{
		"host":            e.Host,
		"ca_cert":         e.CACert,
		"client_cert":     e.ClientCert,
		"client_key_set":  e.ClientKey != "",
		"tls_server_name": e.TLSServerName,
	}
}

func (b *backend) pathDockerEngineWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := b.storeDockerEngine(ctx, req, d); err != nil {
		return respondErr(err)
	}
	// The engine may be down for a moment: the setting is kept anyway, and
	// the worker (switched to it now if it answers) waits for it.
	if _, err := b.engine.ensure(ctx, req.Storage); err != nil {
		var ee *engineError
		if !errors.As(err, &ee) {
			return nil, err
		}
		resp := &logical.Response{}
		resp.AddWarning("configure/docker_engine is stored, but the engine cannot be reached now: " + ee.err.Error() +
			". No run starts until it can; " + req.MountPoint + "status shows the engine's state.")
		return resp, nil
	}
	return nil, nil
}

// storeDockerEngine validates the write and stores it.
func (b *backend) storeDockerEngine(ctx context.Context, req *logical.Request, d *framework.FieldData) error {
	b.configMu.Lock()
	defer b.configMu.Unlock()
	e, err := getDockerEngine(ctx, req.Storage)
	if err != nil {
		return err
	}
	creating := e == nil
	if creating {
		e = &dockerEngineEntry{}
	}
	before := *e
	given := map[string]bool{}
	for _, f := range []struct {
		name string
		dst  *string
		pem  bool
	}{
		{"host", &e.Host, false},
		{"ca_cert", &e.CACert, true},
		{"client_cert", &e.ClientCert, true},
		{"client_key", &e.ClientKey, true},
		{"tls_server_name", &e.TLSServerName, false},
	} {
		raw, ok := d.GetOk(f.name)
		if !ok {
			continue
		}
		given[f.name] = true
		v := strings.TrimSpace(raw.(string))
		if f.pem && v != "" {
			v += "\n"
		}
		*f.dst = v
	}
	if e.Host == "" {
		return invalidf("host is required: give tcp://host:2376 with ca_cert, client_cert and client_key, or unix:///path/to/docker.sock; to go back to the local engine, delete %sconfigure/docker_engine", req.MountPoint)
	}
	tcp := container.HostScheme(e.Host) == "tcp"
	if !tcp {
		// The TLS material of an earlier tcp:// engine goes nowhere now;
		// what this write gives is checked (and refused) below.
		for name, dst := range map[string]*string{"ca_cert": &e.CACert, "client_cert": &e.ClientCert, "client_key": &e.ClientKey, "tls_server_name": &e.TLSServerName} {
			if !given[name] {
				*dst = ""
			}
		}
	}
	if !creating && tcp && before.ClientKey != "" && !given["client_key"] {
		if changed := engineTargetChanges(&before, e); len(changed) > 0 {
			return secretMustFollow(changed, "client_key",
				"give client_key (with the client_cert the engine there trusts) in the same write, or delete configure/docker_engine and write it anew")
		}
	}
	if err := e.engine().Validate(time.Now()); err != nil {
		return invalidf("%s", strings.TrimPrefix(err.Error(), container.ErrInvalidEngine.Error()+": "))
	}
	return putEntry(ctx, req.Storage, storageKeyDockerEngine, e)
}

// engineTargetChanges names the fields that decide where the client key is
// presented (the address and which server is trusted there) and that differ.
func engineTargetChanges(before, after *dockerEngineEntry) []string {
	return changedBoundFields(
		boundField{"host", before.Host, after.Host},
		boundField{"ca_cert", before.CACert, after.CACert},
		boundField{"tls_server_name", before.TLSServerName, after.TLSServerName},
	)
}

func (b *backend) pathDockerEngineDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.configMu.Lock()
	defer b.configMu.Unlock()
	return nil, deleteEntry(ctx, req.Storage, storageKeyDockerEngine)
}

const pathDockerEngineHelpSyn = `The Docker engine the runs go to; absent, the local one.`

const pathDockerEngineHelpDesc = `
By default the runs go to the Docker engine of the Vault node's own host:
DOCKER_HOST of the Vault process, else the local socket. With Vault in HA
(integrated Raft storage) every node can become the active one, and only the
active node runs; give them one shared engine here, replicated to every node,
so that whichever node is active reaches the same containers.

A tcp:// engine is always reached with mutual TLS, as dockerd --tlsverify
expects: a Docker engine on plain TCP gives root on its host to anyone who
can reach the port, and the runs' environment (response-wrapped tokens)
would cross the network in clear.

  vault write flant_gitops/configure/docker_engine \
      host=tcp://docker.example.com:2376 \
      ca_cert=@ca.pem client_cert=@cert.pem client_key=@key.pem

or, for another socket on the node:

  vault write flant_gitops/configure/docker_engine host=unix:///run/user/1000/docker.sock

The write checks the fields (the certificates parse, the key belongs to
client_cert, client_cert is for client authentication and not expired) and
then tries the engine: when it cannot be reached the setting is stored all
the same, with a warning, as the engine may only be down for a moment. No
run starts while the engine cannot be used; flant_gitops/status shows it
under "engine" (host, the engine's id, name and version, or the error, e.g.
that the engine refused the client certificate), and the poll's result says
so too. A run already going on stays on the engine it started on; the next
one goes to the new engine.

A read never shows client_key, only client_key_set. A later write changes
only the fields it gives. A write that changes where the key is presented
(host, ca_cert, tls_server_name) must give client_key again: the stored one
is never sent to another place. Moving to a unix:// socket drops the stored
TLS fields. Delete to go back to the local engine.
`
