package backend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// storageFormat is the layout of a mount's storage that this build reads and
// writes. One number covers the whole mount rather than one per entry: the
// entries are written together by one plugin version, refer to each other
// (a run to its log, the watch state to its run, a receiver to its id
// digest), and a version that can read some but not all of them must not
// start the worker on them. Raise it, with a migration in storageMigrations,
// when an older version would misread what a newer one writes; a new field
// that older versions may ignore needs no new format.
const storageFormat = 1

// storageFormatReadable is the newest format this build reads. Format 2 is
// format 1 plus trust entries that builds reading only format 1 would
// ignore, and so judge commits more loosely than configured: signature
// rules per path and revoked keys. A mount holding any of them is marked
// format 2 (syncStorageFormat), so those builds refuse it instead, and back
// to 1 once none is left, so a roll-back works again.
const storageFormatReadable = 2

// formatTrustRules is the format of a mount with signature rules or
// revoked keys.
const formatTrustRules = 2

// storageKeyFormat holds the storageFormatEntry. A mount written before the
// marker existed has none and is format 1.
const storageKeyFormat = "storage_format"

// storageFormatEntry says which format the mount's storage is in and which
// plugin version put it so, for the message of an older version that cannot
// read it.
type storageFormatEntry struct {
	Format    int    `json:"format"`
	WrittenBy string `json:"written_by"`
}

// storageMigration rewrites a mount's storage from format n to n+1. It must
// be safe to run again over its own result: a crash between it and the
// marker that follows it makes the next start run it once more.
type storageMigration func(ctx context.Context, s logical.Storage) error

// storageMigrations[n] takes format n to n+1; none yet.
var storageMigrations = map[int]storageMigration{}

// formatGate refuses every request while the mount's storage is in a format
// this build cannot read, and remembers the format for status.
type formatGate struct {
	mu      sync.RWMutex
	format  int
	refusal error
}

func (g *formatGate) set(format int, refusal error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.format, g.refusal = format, refusal
}

func (g *formatGate) get() (int, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.format, g.refusal
}

// errNewerFormat is the refusal of storage written by a newer version.
var errNewerFormat = errors.New("storage format too new")

// newerFormatError names the version that wrote the storage and what to do.
func newerFormatError(stored storageFormatEntry, running string, readable int) error {
	return fmt.Errorf("%w: this mount's storage was stored by flant_gitops %s in format %d; this is %s, which reads up to format %d: "+
		"upgrade the plugin again (vault secrets tune -plugin-version=%s or later on this mount, then vault plugin reload -plugin=flant_gitops); "+
		"nothing was read or changed, the stored configuration, keys and runs are kept as they are",
		errNewerFormat, stored.WrittenBy, stored.Format, running, readable, stored.WrittenBy)
}

// checkStorageFormat reads the marker and brings the storage up to current:
// absent, it marks format 1 (what every version before the marker wrote);
// older, it runs each migration and then writes the marker for its result,
// so a crash repeats at most the last step; newer, it changes nothing and
// returns the refusal. write is false where storage is read-only to this
// node (standbys, performance secondaries): the active node migrates.
//
// current is the format a start brings the storage to; readable (at least
// current) the newest it serves as it is.
func checkStorageFormat(ctx context.Context, s logical.Storage, current, readable int, migrations map[int]storageMigration, running string, write bool, log hclog.Logger) (int, error) {
	stored, err := getEntry[storageFormatEntry](ctx, s, storageKeyFormat)
	if err != nil {
		return 0, fmt.Errorf("reading the storage format: %w", err)
	}
	if stored == nil {
		stored = &storageFormatEntry{Format: 1}
		if write {
			mark := storageFormatEntry{Format: 1, WrittenBy: running}
			if err := putEntry(ctx, s, storageKeyFormat, &mark); err != nil {
				return 0, fmt.Errorf("marking the storage format: %w", err)
			}
			stored = &mark
		}
	}
	if stored.Format <= 0 {
		// Written by hand, or a field this version does not know.
		stored.Format = 1
	}
	if stored.Format > readable {
		return stored.Format, newerFormatError(*stored, running, readable)
	}
	if !write || stored.Format >= current {
		return stored.Format, nil
	}
	for f := stored.Format; f < current; f++ {
		migrate := migrations[f]
		if migrate == nil {
			return f, fmt.Errorf("no migration of the storage from format %d to %d in flant_gitops %s: this build is broken, register another", f, f+1, running)
		}
		log.Info("upgrading this mount's storage", "from_format", f, "to_format", f+1, "version", running)
		if err := migrate(ctx, s); err != nil {
			return f, fmt.Errorf("upgrading the storage from format %d to %d: %w; the mount stays in format %d and the upgrade is tried again at the next start", f, f+1, err, f)
		}
		if err := putEntry(ctx, s, storageKeyFormat, &storageFormatEntry{Format: f + 1, WrittenBy: running}); err != nil {
			return f, fmt.Errorf("marking the storage format %d after its upgrade: %w; the upgrade runs again at the next start", f+1, err)
		}
		log.Info("upgraded this mount's storage: versions that read only up to format "+fmt.Sprint(f)+" now refuse it", "format", f+1, "version", running)
	}
	return current, nil
}

// initStorageFormat is the first step of Initialize: nothing else starts on
// storage this build cannot read.
func (b *backend) initStorageFormat(ctx context.Context, s logical.Storage) error {
	format, err := checkStorageFormat(ctx, s, storageFormat, storageFormatReadable, storageMigrations, Version, b.WriteSafeReplicationState(), b.Logger())
	if errors.Is(err, errNewerFormat) {
		b.Logger().Error("refusing to serve this mount", "error", err)
		b.format.set(format, err)
		return nil
	}
	if err != nil {
		return err
	}
	b.format.set(format, nil)
	return nil
}

// HandleRequest answers every request with the refusal while the storage is
// in a newer format (help excepted, and the periodic tick is dropped
// quietly); otherwise the framework routes it.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if _, refusal := b.format.get(); refusal != nil {
		switch req.Operation {
		case logical.HelpOperation:
		case logical.RollbackOperation:
			return nil, nil
		default:
			return nil, logical.CodedError(http.StatusServiceUnavailable, refusal.Error())
		}
	}
	return b.Backend.HandleRequest(ctx, req)
}

// syncStorageFormat marks the mount format 2 while it holds signature rules
// or revoked keys, and format 1 again when none is left (a marker above 2,
// or one this build did not write for these reasons, is left alone). It
// runs after each successful write or delete of a signer or a rule.
func (b *backend) syncStorageFormat(ctx context.Context, s logical.Storage) error {
	stored, err := getEntry[storageFormatEntry](ctx, s, storageKeyFormat)
	if err != nil {
		return fmt.Errorf("reading the storage format: %w", err)
	}
	have := 1
	if stored != nil && stored.Format > 0 {
		have = stored.Format
	}
	if have > formatTrustRules {
		return nil
	}
	want := storageFormat
	rules, err := s.List(ctx, storagePrefixSignatureRule)
	if err != nil {
		return fmt.Errorf("listing the signature rules: %w", err)
	}
	if len(rules) > 0 {
		want = formatTrustRules
	} else {
		signers, err := listSigners(ctx, s)
		if err != nil {
			return err
		}
		for _, e := range signers {
			if len(e.RevokedKeys) > 0 {
				want = formatTrustRules
				break
			}
		}
	}
	if want == have && stored != nil {
		return nil
	}
	if err := putEntry(ctx, s, storageKeyFormat, &storageFormatEntry{Format: want, WrittenBy: Version}); err != nil {
		return fmt.Errorf("marking the storage format %d: %w", want, err)
	}
	b.format.set(want, nil)
	if want != have {
		b.Logger().Info("storage format changed with the trust entries", "from_format", have, "to_format", want,
			"why", "versions that read only format 1 ignore signature rules and revoked keys, so they refuse a mount that holds any")
	}
	return nil
}

// keepsFormat runs syncStorageFormat after a successful write or delete.
func (b *backend) keepsFormat(h framework.OperationFunc) framework.OperationFunc {
	return func(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
		resp, err := h(ctx, req, d)
		if err != nil || resp.IsError() {
			return resp, err
		}
		if ferr := b.syncStorageFormat(ctx, req.Storage); ferr != nil {
			return nil, fmt.Errorf("the change was stored, but %w: write it again", ferr)
		}
		return resp, nil
	}
}
