package watch

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestRunLogPaging(t *testing.T) {
	limits := logLimits{chunkSize: 8, maxChunks: 3, flushInterval: time.Hour}
	tests := []struct {
		name        string
		writes      []string
		offset      int64
		limit       int64
		wantText    string
		wantOffset  int64
		wantSize    int64
		wantDropped int64
	}{
		{"empty log", nil, 0, 100, "", 0, 0, 0},
		{"within one chunk", []string{"hello"}, 0, 100, "hello", 0, 5, 0},
		{"across chunks", []string{"0123456789abcdef", "XY"}, 0, 100, "0123456789abcdefXY", 0, 18, 0},
		{"from an offset", []string{"0123456789abcdef"}, 6, 100, "6789abcdef", 6, 16, 0},
		{"limited page", []string{"0123456789abcdef"}, 6, 4, "6789", 6, 16, 0},
		{"offset past the end", []string{"abc"}, 10, 100, "", 3, 3, 0},
		{"head dropped keeps the tail", []string{"aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd", "ee"}, 0, 100, "ccccccccddddddddee", 16, 34, 16},
		{"one big write", []string{strings.Repeat("x", 40)}, 0, 100, strings.Repeat("x", 16), 24, 40, 24},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := &memStorage{}
			w, err := openRunLog(ctx, s, "run1", limits)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.writes {
				if n, err := w.Write([]byte(p)); err != nil || n != len(p) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			page, err := readRunLog(ctx, s, "run1", tt.offset, tt.limit, limits.chunkSize)
			if err != nil {
				t.Fatal(err)
			}
			if page.Text != tt.wantText || page.Offset != tt.wantOffset || page.Size != tt.wantSize || page.Dropped != tt.wantDropped {
				t.Errorf("page = %+v, want text %q offset %d size %d dropped %d", page, tt.wantText, tt.wantOffset, tt.wantSize, tt.wantDropped)
			}
			if page.NextOffset != page.Offset+int64(len(page.Text)) {
				t.Errorf("next_offset %d does not follow offset %d + %d bytes", page.NextOffset, page.Offset, len(page.Text))
			}
			keys, err := s.List(ctx, runLogPrefix+"run1/")
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) > limits.maxChunks {
				t.Errorf("%d chunks stored, the bound is %d", len(keys), limits.maxChunks)
			}
		})
	}
}

// A re-attached run appends to the log its first instance wrote.
func TestRunLogReopenAppends(t *testing.T) {
	ctx := context.Background()
	s := &memStorage{}
	limits := logLimits{chunkSize: 8, maxChunks: 10, flushInterval: time.Hour}
	for _, part := range []string{"first-part ", "second-part"} {
		w, err := openRunLog(ctx, s, "r", limits)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	page, err := readRunLog(ctx, s, "r", 0, 1000, limits.chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	if page.Text != "first-part second-part" {
		t.Errorf("log = %q", page.Text)
	}
}

// Output becomes readable while the command still runs.
func TestRunLogFlushesWhileRunning(t *testing.T) {
	ctx := context.Background()
	s := &memStorage{}
	w, err := openRunLog(ctx, s, "r", logLimits{chunkSize: 1024, maxChunks: 4, flushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	if _, err := w.Write([]byte("progress")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		page, err := readRunLog(ctx, s, "r", 0, 100, 1024)
		if err != nil {
			t.Fatal(err)
		}
		if page.Text == "progress" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log not flushed while open: %q", page.Text)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeleteRunLogAndPrune(t *testing.T) {
	ctx := context.Background()
	s := &memStorage{}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := range 5 {
		id, err := newRunID(base.Add(time.Duration(i) * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		status := RunSucceeded
		if i == 0 {
			status = RunRunning // the oldest is unfinished: kept for recovery
		}
		if err := putRun(ctx, s, &Run{ID: id, Status: status}); err != nil {
			t.Fatal(err)
		}
		w, err := openRunLog(ctx, s, id, defaultLogLimits())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write(bytes.Repeat([]byte("l"), 10))
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := pruneRuns(ctx, s, 2); err != nil {
		t.Fatal(err)
	}
	got, err := listRunIDs(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{ids[4], ids[3], ids[0]}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("runs after prune = %v, want %v (newest first, unfinished kept)", got, want)
	}
	for _, id := range ids[1:3] {
		keys, err := s.List(ctx, runLogPrefix+id+"/")
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 0 {
			t.Errorf("log of pruned run %s still has %d chunks", id, len(keys))
		}
	}
}

func TestValidRunID(t *testing.T) {
	id, err := newRunID(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id   string
		want bool
	}{
		{id, true},
		{"", false},
		{"../watch/state", false},
		{"a/b", false},
		{"a..b", false},
		{strings.Repeat("a", 65), false},
	}
	for _, tt := range tests {
		if got := validRunID(tt.id); got != tt.want {
			t.Errorf("validRunID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

// hangingStorage blocks Put and/or Delete until the call's context ends, as
// a storage backend that stopped answering does.
type hangingStorage struct {
	memStorage
	hangPut, hangDelete bool
}

func (s *hangingStorage) Put(ctx context.Context, key string, value []byte) error {
	if s.hangPut {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.memStorage.Put(ctx, key, value)
}

func (s *hangingStorage) Delete(ctx context.Context, key string) error {
	if s.hangDelete {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.memStorage.Delete(ctx, key)
}

// A storage that stopped answering must not block the container's output
// forever: every storage call of the writer is bounded, and Close reports it.
func TestRunLogHungStorageIsBounded(t *testing.T) {
	tests := []struct {
		name    string
		storage *hangingStorage
		wantErr string
	}{
		{"put of a full chunk", &hangingStorage{hangPut: true}, "storing the log"},
		{"delete of the oldest chunk", &hangingStorage{hangDelete: true}, "trimming the log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := logLimits{chunkSize: 4, maxChunks: 2, flushInterval: time.Hour, storeTimeout: 20 * time.Millisecond}
			w, err := openRunLog(context.Background(), tt.storage, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, _ = w.Write([]byte(strings.Repeat("x", 5*limits.chunkSize)))
				done <- w.Close(context.Background())
			}()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Close = %v, want an error containing %q", err, tt.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Write blocked on a storage that does not answer")
			}
		})
	}
}

// The engine timestamp of the last container line is stored with the log,
// so a re-attach continues right after it; bytes of the plugin's own carry
// no point.
func TestRunLogResumePoint(t *testing.T) {
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 1, time.UTC)
	t2 := t1.Add(time.Millisecond)
	type write struct {
		text string
		at   time.Time // zero: a plain Write
	}
	tests := []struct {
		name       string
		writes     []write
		wantPoint  time.Time
		wantStored bool
	}{
		{"no log yet", nil, time.Time{}, false},
		{"plain bytes only", []write{{"note\n", time.Time{}}}, time.Time{}, true},
		{"last container line", []write{{"one\n", t1}, {"two\n", t2}, {"note\n", time.Time{}}}, t2, true},
		{"line across chunks", []write{{"a line longer than a chunk\n", t1}}, t1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := &memStorage{}
			limits := logLimits{chunkSize: 8, maxChunks: 10, flushInterval: time.Hour}
			w, err := openRunLog(ctx, s, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			for _, wr := range tt.writes {
				if wr.at.IsZero() {
					_, _ = w.Write([]byte(wr.text))
				} else {
					w.WriteLine([]byte(wr.text), wr.at)
				}
			}
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			again, err := openRunLog(ctx, s, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			point, stored := again.resumePoint()
			if err := again.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if !point.Equal(tt.wantPoint) || stored != tt.wantStored {
				t.Errorf("reopened at %s (stored %v), want %s (stored %v)", point, stored, tt.wantPoint, tt.wantStored)
			}
			if err := deleteRunLog(ctx, s, "r"); err != nil {
				t.Fatal(err)
			}
			if keys, err := s.List(ctx, runLogPrefix); err != nil || len(keys) != 0 {
				t.Errorf("after delete: %v, %v", keys, err)
			}
		})
	}
}
