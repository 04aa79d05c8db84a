package watch

import (
	"bytes"
	"context"
	"errors"
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
			chunks, err := listLogChunks(ctx, s, "run1")
			if err != nil {
				t.Fatal(err)
			}
			if len(chunks) > limits.maxChunks {
				t.Errorf("%d chunks stored, the bound is %d", len(chunks), limits.maxChunks)
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

// crashingStorage is the storage of a plugin that dies once armed: the first
// write of a run log's point after arming fails and every later write is
// lost, as when the process is killed between a chunk and its point.
type crashingStorage struct {
	memStorage
	armed, dead bool
	writes      int // puts and deletes that reached the storage
}

var errCrashed = errors.New("the plugin died")

func (s *crashingStorage) Put(ctx context.Context, key string, value []byte) error {
	if s.dead || (s.armed && strings.HasSuffix(key, "/point")) {
		s.dead = true
		return errCrashed
	}
	s.writes++
	return s.memStorage.Put(ctx, key, value)
}

func (s *crashingStorage) Delete(ctx context.Context, key string) error {
	if s.dead {
		return errCrashed
	}
	s.writes++
	return s.memStorage.Delete(ctx, key)
}

// logLine is a container line the engine stamped, or with a zero time a
// note of the plugin's own (written with Write).
type logLine struct {
	text string
	at   time.Time
}

func writeLines(w *runLogWriter, lines []logLine) {
	for _, l := range lines {
		if l.at.IsZero() {
			_, _ = w.Write([]byte(l.text))
		} else {
			w.WriteLine([]byte(l.text), l.at)
		}
	}
}

func flushNow(w *runLogWriter) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked(context.Background())
}

// A plugin that dies after storing a chunk but before its point leaves lines
// in the log past the stored point. The next instance re-attaches after that
// point and the engine sends those lines again: each must be in the log
// once, and none may be lost.
func TestRunLogCrashBeforePointKeepsEveryLineOnce(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
	const note = "[re-attached]\n"
	tests := []struct {
		name      string
		chunkSize int
		maxChunks int
		stored    []logLine // written and stored with their point
		lost      []logLine // written; their chunk stored, the point not
		later     []logLine // container lines after those
		want      string
	}{
		{
			name: "crash after the chunk, before its point", chunkSize: 64, maxChunks: 10,
			stored: []logLine{{"one\n", at(1)}, {"two\n", at(2)}},
			lost:   []logLine{{"three\n", at(3)}, {"four\n", at(4)}},
			later:  []logLine{{"five\n", at(5)}},
			want:   "one\ntwo\n" + note + "three\nfour\nfive\n",
		},
		{
			name: "a line straddling a chunk boundary", chunkSize: 8, maxChunks: 10,
			stored: []logLine{{"one\n", at(1)}},
			lost:   []logLine{{"a line longer than a chunk\n", at(2)}},
			later:  []logLine{{"after\n", at(3)}},
			want:   "one\n" + note + "a line longer than a chunk\nafter\n",
		},
		{
			name: "crash inside a write, at a chunk change", chunkSize: 8, maxChunks: 10,
			stored: []logLine{{"one\n", at(1)}},
			lost:   []logLine{{"two\n", at(2)}, {"a long line\n", at(3)}},
			later:  []logLine{{"after\n", at(4)}},
			want:   "one\n" + note + "two\na long line\nafter\n",
		},
		{
			name: "the stored point ends a chunk", chunkSize: 8, maxChunks: 10,
			stored: []logLine{{"one\n", at(1)}, {"two\n", at(2)}},
			lost:   []logLine{{"three\n", at(3)}},
			want:   "one\ntwo\n" + note + "three\n",
		},
		{
			name: "a note after the stored point goes with the lines", chunkSize: 64, maxChunks: 10,
			stored: []logLine{{"one\n", at(1)}, {"[note]\n", time.Time{}}},
			lost:   []logLine{{"two\n", at(2)}, {"[late note]\n", time.Time{}}, {"three\n", at(3)}},
			want:   "one\n[note]\n" + note + "two\nthree\n",
		},
		{
			name: "nothing lost", chunkSize: 8, maxChunks: 10,
			stored: []logLine{{"one\n", at(1)}},
			later:  []logLine{{"two\n", at(2)}},
			want:   "one\n" + note + "two\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			limits := logLimits{chunkSize: tt.chunkSize, maxChunks: tt.maxChunks, flushInterval: time.Hour}
			s := &crashingStorage{}
			w, err := openRunLog(ctx, s, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			writeLines(w, tt.stored)
			flushNow(w)
			s.armed = true
			writeLines(w, tt.lost)
			if err := w.Close(ctx); (err != nil) != (len(tt.lost) > 0) {
				t.Fatalf("Close = %v; a crash expected: %v", err, len(tt.lost) > 0)
			}

			// The next instance, on what the dead one left.
			next := &s.memStorage
			again, err := openRunLog(ctx, next, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			since, stored := again.resumePoint()
			if !stored {
				t.Error("the reopened log says it had no bytes")
			}
			_, _ = again.Write([]byte(note))
			// The engine sends every line stamped after since.
			for _, l := range append(append(append([]logLine(nil), tt.stored...), tt.lost...), tt.later...) {
				if !l.at.IsZero() && l.at.After(since) {
					again.WriteLine([]byte(l.text), l.at)
				}
			}
			if err := again.Close(ctx); err != nil {
				t.Fatal(err)
			}
			page, err := readRunLog(ctx, next, "r", 0, 1<<20, limits.chunkSize)
			if err != nil {
				t.Fatal(err)
			}
			if page.Text != tt.want {
				t.Errorf("log = %q, want every line once: %q", page.Text, tt.want)
			}

			// Once more, normally: nothing is cut from a log closed whole.
			third, err := openRunLog(ctx, next, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			if err := third.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if p, err := readRunLog(ctx, next, "r", 0, 1<<20, limits.chunkSize); err != nil || p.Text != tt.want {
				t.Errorf("log after a normal re-open = %q, %v; want %q", p.Text, err, tt.want)
			}
		})
	}
}

// Reopening a log closed normally, or one whose point an older version
// stored (its time alone), changes nothing in storage.
func TestRunLogReopenCutsNothing(t *testing.T) {
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 1, time.UTC)
	t2 := t1.Add(time.Millisecond)
	limits := logLimits{chunkSize: 8, maxChunks: 10, flushInterval: time.Hour}
	oldPoint, err := t1.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		lines     []logLine // written by this version, closed normally
		oldLog    string    // or stored by an older version ...
		oldPoint  []byte    // ... with this point
		wantLog   string
		wantPoint time.Time
	}{
		{"lines", []logLine{{"one\n", t1}, {"two\n", t2}}, "", nil, "one\ntwo\n", t2},
		{"a note last", []logLine{{"one\n", t1}, {"[note]\n", time.Time{}}}, "", nil, "one\n[note]\n", t1},
		{"notes only", []logLine{{"[note]\n", time.Time{}}}, "", nil, "[note]\n", time.Time{}},
		{"a line across chunks", []logLine{{"a line longer than two chunks\n", t1}}, "", nil, "a line longer than two chunks\n", t1},
		{"a line ending a chunk", []logLine{{"1234567\n", t1}}, "", nil, "1234567\n", t1},
		// An older version stored no position: lines stored past its point
		// cannot be told apart, so they stay.
		{"an older version's point", nil, "one\ntwo\nthree\n", oldPoint, "one\ntwo\nthree\n", t1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s := &crashingStorage{}
			w, err := openRunLog(ctx, s, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			writeLines(w, tt.lines)
			_, _ = w.Write([]byte(tt.oldLog))
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if tt.oldPoint != nil {
				if err := s.memStorage.Put(ctx, runLogPointKey("r"), tt.oldPoint); err != nil {
					t.Fatal(err)
				}
			}
			before := s.writes
			again, err := openRunLog(ctx, s, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			point, stored := again.resumePoint()
			if err := again.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if s.writes != before {
				t.Errorf("reopening wrote to storage %d times", s.writes-before)
			}
			if !point.Equal(tt.wantPoint) || !stored {
				t.Errorf("reopened at %s (stored %v), want %s", point, stored, tt.wantPoint)
			}
			page, err := readRunLog(ctx, s, "r", 0, 1<<20, limits.chunkSize)
			if err != nil || page.Text != tt.wantLog {
				t.Errorf("log after reopening = %q, %v; want %q", page.Text, err, tt.wantLog)
			}
		})
	}
}

// When the chunk of the stored point was dropped to keep the log bounded,
// nothing tells where the lines past the point start: the log is kept as it
// is (lines may repeat, as before points had a position).
func TestRunLogPointChunkDropped(t *testing.T) {
	ctx := context.Background()
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	limits := logLimits{chunkSize: 4, maxChunks: 2, flushInterval: time.Hour}
	s := &crashingStorage{}
	w, err := openRunLog(ctx, s, "r", limits)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteLine([]byte("ab\n"), t1)
	flushNow(w)
	s.armed = true
	w.WriteLine([]byte("0123456789abcdefghi\n"), t1.Add(time.Millisecond))
	if err := w.Close(ctx); err == nil {
		t.Fatal("Close = nil, want the crash")
	}
	before, err := readRunLog(ctx, &s.memStorage, "r", 0, 1<<20, limits.chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	if before.Dropped == 0 {
		t.Fatalf("the point's chunk was not dropped: %+v", before)
	}
	again, err := openRunLog(ctx, &s.memStorage, "r", limits)
	if err != nil {
		t.Fatal(err)
	}
	if since, _ := again.resumePoint(); !since.Equal(t1) {
		t.Errorf("reopened at %s, want %s", since, t1)
	}
	if err := again.Close(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := readRunLog(ctx, &s.memStorage, "r", 0, 1<<20, limits.chunkSize)
	if err != nil || *after != *before {
		t.Errorf("log after reopening = %+v, %v; want it kept: %+v", after, err, before)
	}
}

func TestParsePoint(t *testing.T) {
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 1, time.UTC)
	tests := []struct {
		name    string
		stored  string
		want    logPoint
		wantErr bool
	}{
		{"an older version's time", "2026-03-01T10:00:00.000000001Z", logPoint{at: t1}, false},
		{"time and position", `{"time":"2026-03-01T10:00:00.000000001Z","chunk":3,"offset":17}`, logPoint{at: t1, chunk: 3, offset: 17, placed: true}, false},
		{"no position", `{"time":"2026-03-01T10:00:00.000000001Z"}`, logPoint{}, true},
		{"a negative offset", `{"time":"2026-03-01T10:00:00Z","chunk":0,"offset":-1}`, logPoint{}, true},
		{"not a time", "yesterday", logPoint{}, true},
		{"broken JSON", `{"time":`, logPoint{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePoint([]byte(tt.stored))
			if (err != nil) != tt.wantErr || (err == nil && !got.equal(tt.want)) {
				t.Errorf("parsePoint(%q) = %+v, %v; want %+v (error %v)", tt.stored, got, err, tt.want, tt.wantErr)
			}
			if err == nil && got.placed {
				b, err := got.marshal()
				if err != nil {
					t.Fatal(err)
				}
				if back, err := parsePoint(b); err != nil || !back.equal(got) {
					t.Errorf("marshal/parse round trip = %+v, %v; want %+v", back, err, got)
				}
			}
		})
	}
}

// A log that holds only the plugin's notes (the container printed nothing
// yet) is read again from the engine's start, not from now: its point is
// placed, with no line time.
func TestRunLogNotesOnlyResumeFromStart(t *testing.T) {
	ctx := context.Background()
	limits := logLimits{chunkSize: 8, maxChunks: 10, flushInterval: time.Hour}
	tests := []struct {
		name       string
		write      func(w *runLogWriter)
		wantPlaced bool
		wantStored bool
	}{
		{"nothing written", func(*runLogWriter) {}, false, false},
		{"a note only", func(w *runLogWriter) { _, _ = w.Write([]byte("[note]\n")) }, true, true},
		{"a line", func(w *runLogWriter) { w.WriteLine([]byte("line 1\n"), time.Unix(10, 0)) }, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &memStorage{}
			w, err := openRunLog(ctx, s, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			tt.write(w)
			if err := w.Close(ctx); err != nil {
				t.Fatal(err)
			}
			again, err := openRunLog(ctx, s, "r", limits)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = again.Close(ctx) }()
			_, stored := again.resumePoint()
			if placed := again.pointPlaced(); placed != tt.wantPlaced || stored != tt.wantStored {
				t.Errorf("placed %v stored %v, want placed %v stored %v", placed, stored, tt.wantPlaced, tt.wantStored)
			}
		})
	}
}
