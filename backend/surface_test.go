package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

var updateSurface = flag.Bool("update", false, "rewrite backend/testdata/surface.golden from the code")

const surfaceGolden = "testdata/surface.golden"

// TestSurface pins the public surface of the backend (every path's
// path-help text and the whole OpenAPI document, as `vault path-help`
// shows them) to a committed golden file, so a refactor shows it changes
// no path, field, description or message. Rewrite it with
// `go test ./backend -run TestSurface -update` only for an intended change.
func TestSurface(t *testing.T) {
	got, err := renderSurface(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if *updateSurface {
		if err := os.WriteFile(filepath.FromSlash(surfaceGolden), got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(filepath.FromSlash(surfaceGolden))
	if err != nil {
		t.Fatalf("reading %s: %v; create it with `go test ./backend -run TestSurface -update`", surfaceGolden, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("the public surface changed (%s); if intended, rewrite %s with `go test ./backend -run TestSurface -update`", firstDiff(want, got), surfaceGolden)
	}
}

// renderSurface asks a backend on in-memory storage for the help of every
// path of its OpenAPI document, then for the document itself.
func renderSurface(ctx context.Context) ([]byte, error) {
	doc, _, err := referenceBackend(ctx)
	if err != nil {
		return nil, err
	}
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	conf.System = &logical.StaticSystemView{PluginEnvironment: &logical.PluginEnvironment{}}
	lb, err := Factory(ctx, conf)
	if err != nil {
		return nil, err
	}
	defer lb.Cleanup(ctx)

	paths := make([]string, 0, len(doc.Paths))
	for p := range doc.Paths {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var out bytes.Buffer
	for _, p := range paths {
		resp, err := lb.HandleRequest(ctx, &logical.Request{
			Operation: logical.HelpOperation, Path: concretePath(p), Storage: conf.StorageView, MountPoint: "flant_gitops/",
		})
		if err != nil {
			return nil, fmt.Errorf("path-help of %s: %w", p, err)
		}
		help, ok := resp.Data["help"].(string)
		if !ok {
			return nil, fmt.Errorf("path-help of %s carries no help text (got %T)", p, resp.Data["help"])
		}
		fmt.Fprintf(&out, "==== path-help %s\n%s\n", p, help)
	}
	js, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the OpenAPI document: %w", err)
	}
	fmt.Fprintf(&out, "==== openapi\n%s\n", js)
	return out.Bytes(), nil
}
