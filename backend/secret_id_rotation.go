package backend

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/logical"
)

// secretIDRotation is the write-ahead record of one rotation: while it
// exists both secret_ids are in storage, so a crash at any step leaves at
// least one that works, and the next call finishes or rolls back.
type secretIDRotation struct {
	OldSecretID         string    `json:"old_secret_id"`
	NewSecretID         string    `json:"new_secret_id"`
	NewSecretIDAccessor string    `json:"new_secret_id_accessor"`
	StartedAt           time.Time `json:"started_at"`
	// Target is vaultTargetKey of the access the rotation was made for: its
	// secret_ids are never sent anywhere else. Empty in records written
	// before it existed, which count as made for the current target.
	Target string `json:"target,omitempty"`
}

// secretIDRotationDue says whether the secret_id should be replaced at now:
// once two thirds of secret_id_ttl have passed since it was issued, which
// leaves a third of its life to retry a failed rotation.
func secretIDRotationDue(e *vaultAccessEntry, now time.Time) bool {
	if e == nil || e.SecretIDTTL <= 0 || e.SecretID == "" {
		return false
	}
	return !now.Before(e.SecretIDIssuedAt.Add(e.SecretIDTTL * 2 / 3))
}

func targetFromEntry(e *vaultAccessEntry) targetVault {
	return targetVault{
		Addr:          e.VaultAddr,
		TLSServerName: e.VaultTLSServerName,
		CACert:        e.VaultCACert,
		MountPoint:    e.ApproleMountPoint,
		RoleName:      e.RoleName,
		RoleID:        e.RoleID,
		SecretID:      e.SecretID,
		SecretIDTTL:   e.SecretIDTTL,
	}
}

func (t targetVault) rolePath(suffix string) string {
	return t.mount() + "/role/" + t.RoleName + suffix
}

// rotateSecretID finishes a rotation a crash left behind and rotates the
// secret_id when it is due. The periodic function calls it, so a secret_id
// is renewed even when no run happens for longer than its TTL.
func (a *approleClient) rotateSecretID(ctx context.Context, s logical.Storage) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rotateSecretIDLocked(ctx, s)
}

// withTarget runs fn under the client's lock, after finishing or making a
// due secret_id rotation (a failure is logged: the current secret_id works
// until it expires), with the configured access (nil when there is none)
// and a way to get a token for it. A storage error comes back unwrapped.
func (a *approleClient) withTarget(ctx context.Context, s logical.Storage, fn func(entry *vaultAccessEntry, token func() (*api.Client, string, error)) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.rotateSecretIDLocked(ctx, s); err != nil {
		a.logger().Error("secret_id rotation failed; the current secret_id is used until it expires", "error", err)
	}
	entry, err := getVaultAccess(ctx, s)
	if err != nil {
		return err
	}
	return fn(entry, func() (*api.Client, string, error) { return a.tokenLocked(ctx, targetFromEntry(entry)) })
}

// periodicSecretIDRotation is the periodic function's share: two storage
// reads when nothing is due, so the tick stays fast; failures are logged and
// retried on the next tick while the old secret_id still works.
func (a *approleClient) periodicSecretIDRotation(ctx context.Context, s logical.Storage) {
	rot, err := getEntry[secretIDRotation](ctx, s, storageKeySecretIDRotation)
	if err == nil && rot == nil {
		var entry *vaultAccessEntry
		entry, err = getVaultAccess(ctx, s)
		if err == nil && !secretIDRotationDue(entry, a.now()) {
			return
		}
	}
	if err == nil {
		err = a.rotateSecretID(ctx, s)
	}
	if err != nil {
		a.logger().Error("secret_id rotation failed; retried on the next periodic tick", "error", err)
	}
}

// rotateSecretIDLocked: generate a new secret_id for role_name, store it
// next to the old one, log in with it, make it the configured one, destroy
// the old one on the target, drop the old one from storage. a.mu is held.
func (a *approleClient) rotateSecretIDLocked(ctx context.Context, s logical.Storage) error {
	if err := a.recoverSecretIDRotationLocked(ctx, s); err != nil {
		return err
	}
	entry, err := getVaultAccess(ctx, s)
	if err != nil || !secretIDRotationDue(entry, a.now()) {
		return err
	}
	t := targetFromEntry(entry)
	if t.RoleName == "" {
		return errors.New("secret_id_ttl is set but role_name is not: set role_name in configure_vault_access so the plugin can rotate the secret_id before it expires")
	}
	c, token, err := a.tokenLocked(ctx, t)
	if err != nil {
		return fmt.Errorf("rotate secret_id: %w", err)
	}
	gen, err := as(c, token, "").Logical().WriteWithContext(ctx, t.rolePath("/secret-id"), nil)
	if err != nil {
		return fmt.Errorf("rotate secret_id: generate a new one at %s on %s (the AppRole token needs \"update\" on it and on %s): %w",
			t.rolePath("/secret-id"), t.Addr, t.rolePath("/secret-id/destroy"), err)
	}
	newID, _ := dataString(gen, "secret_id")
	newAccessor, _ := dataString(gen, "secret_id_accessor")
	if newID == "" {
		return fmt.Errorf("rotate secret_id: %s on %s answered without a secret_id", t.rolePath("/secret-id"), t.Addr)
	}
	if ttl, ok := dataInt(gen, "secret_id_ttl"); ok && ttl > 0 && time.Duration(ttl)*time.Second < t.SecretIDTTL {
		a.logger().Warn("the role's secret_id_ttl on the target Vault is shorter than configure_vault_access secret_id_ttl; set it no longer than the role's, or the secret_id expires before the plugin rotates it",
			"role_name", t.RoleName, "role_secret_id_ttl", (time.Duration(ttl) * time.Second).String(), "secret_id_ttl", t.SecretIDTTL.String())
	}
	rot := &secretIDRotation{OldSecretID: entry.SecretID, NewSecretID: newID, NewSecretIDAccessor: newAccessor, StartedAt: a.now(), Target: vaultTargetKey(entry)}
	if err := putEntry(ctx, s, storageKeySecretIDRotation, rot); err != nil {
		a.destroySecretIDLocked(ctx, c, token, t, "", newAccessor)
		return fmt.Errorf("rotate secret_id: %w", err)
	}
	return a.commitSecretIDRotationLocked(ctx, s, t, rot)
}

// commitSecretIDRotationLocked proves the new secret_id by logging in with
// it, makes it the configured one, then destroys the old one. A failed login
// rolls the rotation back; the old secret_id is still configured then.
func (a *approleClient) commitSecretIDRotationLocked(ctx context.Context, s logical.Storage, t targetVault, rot *secretIDRotation) error {
	c, err := a.clientLocked(ctx, t)
	if err != nil {
		return fmt.Errorf("rotate secret_id: %w", err)
	}
	fresh, err := approleLoginWith(ctx, c, t, rot.NewSecretID, a.now)
	if err != nil {
		// Only the target's refusal proves the new secret_id useless; when
		// the target was unreachable the record stays for the next try.
		var re *api.ResponseError
		if errors.As(err, &re) {
			a.rollBackSecretIDRotationLocked(ctx, s, t, rot)
		}
		return fmt.Errorf("rotate secret_id: log in with the new secret_id: %w", err)
	}
	entry, changed, err := a.swapSecretID(ctx, s, t, rot)
	if err != nil {
		a.revoke(ctx, c, fresh)
		return fmt.Errorf("rotate secret_id: %w", err)
	}
	if changed {
		a.revoke(ctx, c, fresh)
		a.rollBackSecretIDRotationLocked(ctx, s, t, rot)
		return nil
	}
	// The session now belongs to the new secret_id; the token obtained with
	// the old one is revoked.
	a.identity = targetFromEntry(entry).identity()
	a.replaceTokenLocked(ctx, fresh)
	a.logger().Info("rotated the AppRole secret_id on the target Vault", "vault_addr", t.Addr, "role_name", t.RoleName, "next_rotation_after", (entry.SecretIDTTL * 2 / 3).String())
	return a.finishSecretIDRotationLocked(ctx, s, targetFromEntry(entry), rot)
}

// swapSecretID makes the rotation's new secret_id the configured one, under
// configMu so that an operator's write is not lost. changed reports that the
// operator wrote configure_vault_access since the rotation started (or
// deleted it); their values win and nothing is written.
func (a *approleClient) swapSecretID(ctx context.Context, s logical.Storage, t targetVault, rot *secretIDRotation) (entry *vaultAccessEntry, changed bool, err error) {
	a.configMu.Lock()
	defer a.configMu.Unlock()
	entry, err = getVaultAccess(ctx, s)
	if err != nil {
		return nil, false, err
	}
	if entry == nil || entry.SecretID != rot.OldSecretID || targetFromEntry(entry).identity() != t.identity() {
		return nil, true, nil
	}
	entry.SecretID = rot.NewSecretID
	entry.SecretIDIssuedAt = a.now()
	if err := putVaultAccess(ctx, s, entry); err != nil {
		return nil, false, err
	}
	return entry, false, nil
}

// finishSecretIDRotationLocked destroys the old secret_id on the target and
// then forgets it. If destroying fails the record stays and the next call
// tries again; the new secret_id is already in use either way.
func (a *approleClient) finishSecretIDRotationLocked(ctx context.Context, s logical.Storage, t targetVault, rot *secretIDRotation) error {
	c, token, err := a.tokenLocked(ctx, t)
	if err != nil {
		return fmt.Errorf("rotate secret_id: destroy the old secret_id: %w", err)
	}
	if rot.OldSecretID != "" {
		_, err := as(c, token, "").Logical().WriteWithContext(ctx, t.rolePath("/secret-id/destroy"), map[string]any{"secret_id": rot.OldSecretID})
		if err != nil {
			return fmt.Errorf("rotate secret_id: destroy the old secret_id at %s on %s (the new one is in use; retried on the next tick): %w",
				t.rolePath("/secret-id/destroy"), t.Addr, err)
		}
	}
	return deleteEntry(ctx, s, storageKeySecretIDRotation)
}

// rollBackSecretIDRotationLocked destroys the unused new secret_id (best
// effort: it is only in our storage) and forgets the rotation.
func (a *approleClient) rollBackSecretIDRotationLocked(ctx context.Context, s logical.Storage, t targetVault, rot *secretIDRotation) {
	if c, token, err := a.tokenLocked(ctx, t); err == nil {
		a.destroySecretIDLocked(ctx, c, token, t, rot.NewSecretID, rot.NewSecretIDAccessor)
	} else {
		a.logger().Warn("could not log in to destroy an unused secret_id; it expires with its TTL", "role_name", t.RoleName, "error", err)
	}
	if err := deleteEntry(ctx, s, storageKeySecretIDRotation); err != nil {
		a.logger().Error("dropping the rolled-back secret_id rotation failed; retried on the next tick", "error", err)
	}
}

// destroySecretIDLocked destroys an unused secret_id by accessor when known.
func (a *approleClient) destroySecretIDLocked(ctx context.Context, c *api.Client, token string, t targetVault, secretID, accessor string) {
	var err error
	switch {
	case accessor != "":
		_, err = as(c, token, "").Logical().WriteWithContext(ctx, t.rolePath("/secret-id-accessor/destroy"), map[string]any{"secret_id_accessor": accessor})
	case secretID != "":
		_, err = as(c, token, "").Logical().WriteWithContext(ctx, t.rolePath("/secret-id/destroy"), map[string]any{"secret_id": secretID})
	default:
		return
	}
	if err != nil {
		a.logger().Warn("destroying an unused secret_id on the target Vault failed; it expires with its TTL", "role_name", t.RoleName, "error", err)
	}
}

// recoverSecretIDRotationLocked finishes or rolls back a rotation that a
// crash (or a failed step) left in storage:
//   - the new secret_id is configured: only the old one is left to destroy;
//   - the old one is still configured: commit if the new one logs in,
//     otherwise roll back;
//   - the operator wrote another secret_id (or deleted the access): drop
//     the unused new one.
func (a *approleClient) recoverSecretIDRotationLocked(ctx context.Context, s logical.Storage) error {
	rot, err := getEntry[secretIDRotation](ctx, s, storageKeySecretIDRotation)
	if err != nil || rot == nil {
		return err
	}
	entry, err := getVaultAccess(ctx, s)
	if err != nil {
		return err
	}
	if entry == nil {
		return deleteEntry(ctx, s, storageKeySecretIDRotation)
	}
	if rot.Target != "" && rot.Target != vaultTargetKey(entry) {
		// The operator moved the access to another target: the record's
		// secret_ids belong to the old one and go nowhere.
		a.logger().Warn("dropping a secret_id rotation made for a target Vault that is no longer configured; its unused secret_id expires with its TTL there", "started_at", rot.StartedAt)
		return deleteEntry(ctx, s, storageKeySecretIDRotation)
	}
	t := targetFromEntry(entry)
	switch entry.SecretID {
	case rot.NewSecretID:
		return a.finishSecretIDRotationLocked(ctx, s, t, rot)
	case rot.OldSecretID:
		a.logger().Info("finishing a secret_id rotation interrupted by a restart", "role_name", t.RoleName, "started_at", rot.StartedAt)
		return a.commitSecretIDRotationLocked(ctx, s, t, rot)
	default:
		a.rollBackSecretIDRotationLocked(ctx, s, t, rot)
		return nil
	}
}

func dataString(s *api.Secret, key string) (string, bool) {
	if s == nil || s.Data == nil {
		return "", false
	}
	v, ok := s.Data[key].(string)
	return v, ok
}

func dataInt(s *api.Secret, key string) (int64, bool) {
	if s == nil || s.Data == nil {
		return 0, false
	}
	switch v := s.Data[key].(type) {
	case float64:
		return int64(v), true
	case interface{ Int64() (int64, error) }:
		n, err := v.Int64()
		return n, err == nil
	}
	return 0, false
}
