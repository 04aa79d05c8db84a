package watch

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"
)

// A run's log is stored as numbered chunks under runlog/<id>/. Chunk n holds
// bytes [n*chunkSize, (n+1)*chunkSize) of the log, so a byte offset maps to a
// chunk without reading any other. When a log grows past maxChunks, the
// oldest chunks are deleted: the tail of a log is where failures are.

type logLimits struct {
	chunkSize     int
	maxChunks     int
	flushInterval time.Duration
	// storeTimeout bounds each storage call of the writer (default 30s): a
	// hung storage must not block the container's output copier, and with it
	// the end of the run, forever.
	storeTimeout time.Duration
}

// defaultLogLimits keeps at most 2 MiB of log per run and shows new output
// to readers within a second.
func defaultLogLimits() logLimits {
	return logLimits{chunkSize: 64 << 10, maxChunks: 32, flushInterval: time.Second}
}

func runLogKey(id string, chunk int64) string {
	return fmt.Sprintf("%s%s/%010d", runLogPrefix, id, chunk)
}

// runLogPointKey holds the engine's timestamp of the last container line
// stored, where a re-attach continues, with the position in the log where the
// bytes written up to then end. It is written after the chunk that holds
// them: a crash in between leaves bytes past the position, which the next
// openRunLog discards because the engine sends their lines again.
func runLogPointKey(id string) string { return runLogPrefix + id + "/point" }

// logPoint is the engine timestamp of the last container line taken and the
// end of the bytes written up to then (a plugin's note written after a line
// moves the end, not the time).
type logPoint struct {
	at     time.Time
	chunk  int64
	offset int
	placed bool // chunk and offset are known; a point stored by an older version has only the time
}

func (p logPoint) equal(q logPoint) bool {
	return p.at.Equal(q.at) && p.chunk == q.chunk && p.offset == q.offset && p.placed == q.placed
}

// storedPoint is the stored form of a placed logPoint. Older versions stored
// the time alone, as time.MarshalText does; parsePoint reads both.
type storedPoint struct {
	Time   time.Time `json:"time"`
	Chunk  *int64    `json:"chunk"`
	Offset *int      `json:"offset"`
}

func (p logPoint) marshal() ([]byte, error) {
	return json.Marshal(storedPoint{Time: p.at, Chunk: &p.chunk, Offset: &p.offset})
}

func parsePoint(b []byte) (logPoint, error) {
	if !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		var p logPoint
		err := p.at.UnmarshalText(b)
		return p, err
	}
	var sp storedPoint
	if err := json.Unmarshal(b, &sp); err != nil {
		return logPoint{}, err
	}
	if sp.Chunk == nil || sp.Offset == nil || *sp.Chunk < 0 || *sp.Offset < 0 {
		return logPoint{}, errors.New("no valid chunk and offset")
	}
	return logPoint{at: sp.Time, chunk: *sp.Chunk, offset: *sp.Offset, placed: true}, nil
}

// runLogWriter buffers the container's output and writes the current chunk to
// storage when it fills up and at every flush interval, so a reader sees the
// log while the command is still running.
type runLogWriter struct {
	storage Storage
	id      string
	limits  logLimits

	mu      sync.Mutex
	chunk   int64  // index of the chunk being filled
	buf     []byte // its bytes so far
	dirty   bool
	oldest  int64    // oldest chunk still stored
	stored  bool     // the log had bytes when it was opened
	point   logPoint // the last container line taken and the end of the bytes written
	pointAt logPoint // the point as stored
	err     error    // first storage error; later writes are dropped
	stop    chan struct{}
	stopped chan struct{}
}

// openRunLog continues an existing log (a re-attached run) or starts one.
func openRunLog(ctx context.Context, s Storage, id string, limits logLimits) (*runLogWriter, error) {
	w := &runLogWriter{storage: s, id: id, limits: limits, stop: make(chan struct{}), stopped: make(chan struct{})}
	chunks, err := listLogChunks(ctx, s, id)
	if err != nil {
		return nil, err
	}
	if len(chunks) > 0 {
		w.oldest = chunks[0]
		w.chunk = chunks[len(chunks)-1]
		e, err := s.Get(ctx, runLogKey(id, w.chunk))
		if err != nil {
			return nil, fmt.Errorf("reading the log of run %s: %w", id, err)
		}
		w.buf = append(w.buf, e...)
		w.stored = w.chunk > 0 || len(w.buf) > 0
	}
	e, err := s.Get(ctx, runLogPointKey(id))
	if err != nil {
		return nil, fmt.Errorf("reading the log of run %s: %w", id, err)
	}
	if e != nil {
		p, err := parsePoint(e)
		if err != nil {
			return nil, fmt.Errorf("reading the log of run %s: its stored point %q: %w", id, e, err)
		}
		if p.placed {
			if err := w.discardAfter(ctx, chunks, p); err != nil {
				return nil, err
			}
		}
		w.point, w.pointAt = p, p
	}
	w.stored = w.chunk > 0 || len(w.buf) > 0
	go w.flushLoop(context.WithoutCancel(ctx))
	return w, nil
}

// discardAfter removes what the log holds past p: bytes stored by a writer
// that died before it stored their point. The engine sends their lines again
// after p's time, so keeping them would show those lines twice. Later chunks
// go first, the newest first, so that a crash in the middle leaves a log
// without holes that the next open cuts the same way. When p's chunk is gone
// (dropped to keep the log bounded) or shorter than p says, nothing is cut:
// the log may then repeat lines, as it did before points had a position.
func (w *runLogWriter) discardAfter(ctx context.Context, chunks []int64, p logPoint) error {
	i := sort.Search(len(chunks), func(i int) bool { return chunks[i] >= p.chunk })
	if i == len(chunks) || chunks[i] != p.chunk {
		return nil
	}
	data := w.buf
	if p.chunk != w.chunk {
		gctx, cancel := w.storeContext(ctx)
		e, err := w.storage.Get(gctx, runLogKey(w.id, p.chunk))
		cancel()
		if err != nil {
			return fmt.Errorf("reading the log of run %s: %w", w.id, err)
		}
		data = e
	}
	if len(data) < p.offset || (p.chunk == w.chunk && len(data) == p.offset) {
		return nil
	}
	for j := len(chunks) - 1; j > i; j-- {
		dctx, cancel := w.storeContext(ctx)
		err := w.storage.Delete(dctx, runLogKey(w.id, chunks[j]))
		cancel()
		if err != nil {
			return fmt.Errorf("discarding the part of the log of run %s stored past its point: %w", w.id, err)
		}
	}
	if len(data) > p.offset {
		pctx, cancel := w.storeContext(ctx)
		err := w.storage.Put(pctx, runLogKey(w.id, p.chunk), data[:p.offset])
		cancel()
		if err != nil {
			return fmt.Errorf("discarding the part of the log of run %s stored past its point: %w", w.id, err)
		}
	}
	w.chunk, w.buf = p.chunk, append([]byte(nil), data[:p.offset]...)
	return nil
}

func (w *runLogWriter) flushLoop(ctx context.Context) {
	defer close(w.stopped)
	t := time.NewTicker(w.limits.flushInterval)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
			w.mu.Lock()
			w.flushLocked(ctx)
			w.mu.Unlock()
		}
	}
}

// resumePoint returns the engine timestamp of the last container line stored
// (zero when there is none) and whether the log had any bytes when opened.
func (w *runLogWriter) resumePoint() (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pointAt.at, w.stored
}

// pointPlaced reports whether the stored point says where its bytes end, as
// this version stores it. Then a zero time means no container line was
// stored yet (only the plugin's notes), and the engine's log is read from
// the start; without a placed point a zero time means the log was written
// by an older version, which can only continue from now.
func (w *runLogWriter) pointPlaced() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pointAt.placed
}

// WriteLine implements container.LineWriter: it stores a container line and
// remembers its engine timestamp and where it ends.
func (w *runLogWriter) WriteLine(p []byte, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeLocked(p)
	w.point = logPoint{at: at, chunk: w.chunk, offset: len(w.buf), placed: true}
}

// Write never blocks on storage for longer than one chunk put and never fails
// the container: a storage problem is reported by Close. Its bytes (the
// plugin's notes) move the end of the point, not its time, so a log closed
// normally is reopened whole.
func (w *runLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.writeLocked(p)
	w.point.chunk, w.point.offset, w.point.placed = w.chunk, len(w.buf), true
	return n, nil
}

func (w *runLogWriter) writeLocked(p []byte) int {
	n := len(p)
	for len(p) > 0 {
		room := w.limits.chunkSize - len(w.buf)
		take := min(room, len(p))
		w.buf = append(w.buf, p[:take]...)
		w.dirty = true
		p = p[take:]
		if len(w.buf) == w.limits.chunkSize {
			w.flushLocked(context.Background())
			w.chunk++
			w.buf = w.buf[:0]
			w.dirty = false
			w.dropOldLocked(context.Background())
		}
	}
	return n
}

func (w *runLogWriter) flushLocked(ctx context.Context) {
	if w.err != nil {
		return
	}
	ctx, cancel := w.storeContext(ctx)
	defer cancel()
	// The point taken with the bytes below; a line written during a chunk
	// change counts only once its last byte is stored.
	point := w.point
	if w.dirty {
		if err := w.storage.Put(ctx, runLogKey(w.id, w.chunk), append([]byte(nil), w.buf...)); err != nil {
			w.err = fmt.Errorf("storing the log of run %s: %w", w.id, err)
			return
		}
		w.dirty = false
	}
	if point.equal(w.pointAt) {
		return
	}
	text, err := point.marshal()
	if err == nil {
		err = w.storage.Put(ctx, runLogPointKey(w.id), text)
	}
	if err != nil {
		w.err = fmt.Errorf("storing the log of run %s: %w", w.id, err)
		return
	}
	w.pointAt = point
}

// storeContext bounds one storage call of the writer.
func (w *runLogWriter) storeContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cmp.Or(w.limits.storeTimeout, 30*time.Second))
}

func (w *runLogWriter) dropOldLocked(ctx context.Context) {
	for w.err == nil && w.chunk-w.oldest >= int64(w.limits.maxChunks) {
		dctx, cancel := w.storeContext(ctx)
		err := w.storage.Delete(dctx, runLogKey(w.id, w.oldest))
		cancel()
		if err != nil {
			w.err = fmt.Errorf("trimming the log of run %s: %w", w.id, err)
			return
		}
		w.oldest++
	}
}

// Close flushes what is buffered and stops the flush loop.
func (w *runLogWriter) Close(ctx context.Context) error {
	close(w.stop)
	<-w.stopped
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked(ctx)
	return w.err
}

func listLogChunks(ctx context.Context, s Storage, id string) ([]int64, error) {
	keys, err := s.List(ctx, runLogPrefix+id+"/")
	if err != nil {
		return nil, fmt.Errorf("listing the log of run %s: %w", id, err)
	}
	chunks := make([]int64, 0, len(keys))
	for _, k := range keys {
		n, err := strconv.ParseInt(k, 10, 64)
		if err != nil || n < 0 {
			continue // not a chunk key
		}
		chunks = append(chunks, n)
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i] < chunks[j] })
	return chunks, nil
}

// LogPage is one read of a run's log.
type LogPage struct {
	Text string
	// Offset is where Text starts; it is past the requested offset when the
	// requested bytes were dropped to keep the log bounded.
	Offset     int64
	NextOffset int64
	Size       int64 // bytes written so far
	Dropped    int64 // bytes deleted from the head of the log
}

func readRunLog(ctx context.Context, s Storage, id string, offset, limit int64, chunkSize int) (*LogPage, error) {
	chunks, err := listLogChunks(ctx, s, id)
	if err != nil {
		return nil, err
	}
	if len(chunks) == 0 {
		return &LogPage{Offset: 0, NextOffset: 0}, nil
	}
	cs := int64(chunkSize)
	last := chunks[len(chunks)-1]
	lastEntry, err := s.Get(ctx, runLogKey(id, last))
	if err != nil {
		return nil, fmt.Errorf("reading the log of run %s: %w", id, err)
	}
	size := last * cs
	size += int64(len(lastEntry))
	page := &LogPage{Size: size, Dropped: chunks[0] * cs}
	offset = max(offset, page.Dropped)
	offset = min(offset, size)
	page.Offset = offset
	var out []byte
	for pos := offset; pos < size && int64(len(out)) < limit; {
		n := pos / cs
		var val []byte
		if n == last && lastEntry != nil {
			val = lastEntry
		} else {
			e, err := s.Get(ctx, runLogKey(id, n))
			if err != nil {
				return nil, fmt.Errorf("reading the log of run %s: %w", id, err)
			}
			if e == nil { // dropped while we read; start over from what is left
				break
			}
			val = e
		}
		from := pos - n*cs
		if from >= int64(len(val)) {
			break
		}
		take := min(int64(len(val))-from, limit-int64(len(out)))
		out = append(out, val[from:from+take]...)
		pos += take
	}
	page.Text = string(out)
	page.NextOffset = offset + int64(len(out))
	return page, nil
}

func deleteRunLog(ctx context.Context, s Storage, id string) error {
	chunks, err := listLogChunks(ctx, s, id)
	if err != nil {
		return err
	}
	for _, n := range chunks {
		if err := s.Delete(ctx, runLogKey(id, n)); err != nil {
			return fmt.Errorf("deleting the log of run %s: %w", id, err)
		}
	}
	if err := s.Delete(ctx, runLogPointKey(id)); err != nil {
		return fmt.Errorf("deleting the log of run %s: %w", id, err)
	}
	return nil
}
