package backend

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/flant/flant_gitops/backend/approle"
)

// approleClient is the AppRole client (backend/approle) as the run, the
// configure_vault_access paths and the periodic function use it.
type approleClient interface {
	// WithTarget runs fn under the client's lock with the configured
	// access (nil when there is none) and a way to log in to it.
	WithTarget(ctx context.Context, s approle.Store, fn func(t *approle.Target, login approle.Login) error) error
	// PeriodicRotation rotates the secret_id when it is due; it logs, and
	// the next tick retries, what fails.
	PeriodicRotation(ctx context.Context, s approle.Store)
	// ForgetRotation drops a rotation in flight whose secret_ids belong to
	// a target no longer configured.
	ForgetRotation(ctx context.Context, s approle.Store) error
	// Reset revokes the current token and forgets the session.
	Reset(ctx context.Context)
}

// newApproleClient makes the mount's AppRole client; it swaps the
// configured secret_id under configMu.
func (b *backend) newApproleClient(now func() time.Time) *approle.Client {
	return approle.New(approle.Config{Logger: b.Backend.Logger, Now: now, ConfigMu: &b.configMu})
}

// approleStore shows a mount's logical.Storage to the AppRole client:
// configure_vault_access, which stays the backend's entry, and the client's
// rotation record, both through the backend's JSON entry helpers.
type approleStore struct{ s logical.Storage }

func approleStorage(s logical.Storage) approleStore { return approleStore{s} }

func (a approleStore) Target(ctx context.Context) (*approle.Target, error) {
	e, err := getVaultAccess(ctx, a.s)
	if err != nil || e == nil {
		return nil, err
	}
	t := targetFromEntry(e)
	return &t, nil
}

func (a approleStore) SetSecretID(ctx context.Context, secretID string, issuedAt time.Time) error {
	e, err := getVaultAccess(ctx, a.s)
	if err != nil {
		return err
	}
	if e == nil {
		return errors.New("configure_vault_access was deleted")
	}
	e.SecretID, e.SecretIDIssuedAt = secretID, issuedAt
	return putVaultAccess(ctx, a.s, e)
}

func (a approleStore) Rotation(ctx context.Context) (*approle.Rotation, error) {
	return getEntry[approle.Rotation](ctx, a.s, approle.RotationKey)
}

func (a approleStore) PutRotation(ctx context.Context, rot *approle.Rotation) error {
	return putEntry(ctx, a.s, approle.RotationKey, rot)
}

func (a approleStore) DropRotation(ctx context.Context) error {
	return deleteEntry(ctx, a.s, approle.RotationKey)
}

func targetFromEntry(e *vaultAccessEntry) approle.Target {
	return approle.Target{
		Addr:             e.VaultAddr,
		TLSServerName:    e.VaultTLSServerName,
		CACert:           e.VaultCACert,
		MountPoint:       e.ApproleMountPoint,
		RoleName:         e.RoleName,
		RoleID:           e.RoleID,
		SecretID:         e.SecretID,
		SecretIDTTL:      e.SecretIDTTL,
		SecretIDIssuedAt: e.SecretIDIssuedAt,
	}
}
