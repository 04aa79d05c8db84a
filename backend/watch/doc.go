// Package watch is the watch worker of one flant_gitops mount and its run
// log: it follows one branch, checks each new HEAD, runs the configured
// commands for it in a container, and remembers what came of it. It knows
// nothing of Vault: the backend gives it storage, settings and the outside
// world through Deps, and its paths call the Worker's methods.
//
// # Polls
//
// One goroutine per mount does all the work, one poll and at most one run at
// a time. Three things wake it: Start (once, at mount initialisation: it
// first settles runs a previous instance left, then polls), Tick (Vault's
// periodic function: it only decides whether git_poll_period has passed and
// never waits for the worker) and RequestPoll (the poll path: rate-limited
// to one request per 2 seconds, answered at once, queued behind a run in
// progress). A poll fetches the branch and decides, for HEAD:
//
//   - HEAD is the last successful commit: up_to_date.
//   - HEAD is, by commit id or by signed content (gitwatch ContentID: the
//     same change under a re-wrapped signature), the commit whose run an
//     operator canceled: held, until a new commit or RequestPoll(retry).
//   - HEAD is that failing commit and its backoff has not passed: backoff.
//   - Otherwise the last successful commit must be an ancestor of HEAD
//     (else refused: a force-push needs an operator), and HEAD must meet
//     the signature rule (gitwatch Accept: the quorum of trusted keys, the
//     plugin's own keys counting only on top of an accepted commit), else
//     refused with who signed and what is missing. Then it runs: ran.
//
// The outcome word (the Outcome* constants) and a sentence for the operator
// are stored in State with the quorum of HEAD; nothing configured is
// not_configured, a settings, git or storage failure is error, and the
// next poll tries again.
//
// # Runs
//
// A run is stored as queued before anything slow happens, so a restart
// always finds it; running once its vault requests are ready and its
// container starts, then exactly one
// of succeeded (exit 0: its commit becomes the last successful commit,
// written before the run record so a crash in between never runs it twice),
// failed (non-zero exit, timeout, out of memory, a vault request or Docker
// failing: retried after the poll period, doubled per failure in a row and
// capped at an hour, or at the period when that is longer), canceled (CancelRun: the commit is held) or
// interrupted (Stop, a handover before its container started, its container
// gone, or a fence lifted: retried at once, with no backoff).
// Containers carry LabelMount and LabelRun, and each run records the id of
// the Docker engine it started on. On Start, an unfinished run whose
// container still exists is re-attached and followed to its end (its log
// continues after the last line stored). One whose container is gone is
// interrupted when it started on this node's engine (or an unknown one);
// when it started on another engine it is fenced: it may still be running
// there, so no run of any commit starts until its deadline (start plus
// run_timeout, when the container's init stops it) and
// container.DeadlineMargin have passed, or a forced poll, and State.Fence
// says so. Every poll removes the mount's containers on this node's engine
// that are past their deadline and the margin (orphans nobody follows), and
// logs each. A run whose fate
// cannot be told yet (fenced, or the engine not answering) is checked again
// on every wake. Stop (unmount) kills the container, records the run
// interrupted and waits for it, bounded; HandOver (seal, step-down,
// shutdown, reload) stops following and leaves the container running, the
// run still running, for the next instance to re-attach. The newest 50 runs are kept with their logs;
// older finished ones are pruned.
//
// # Run log
//
// A run's output is stored in 64 KiB chunks under runlog/<id>/, written
// when a chunk fills and every second, so ReadLog shows a running command.
// Past 32 chunks (2 MiB) the oldest are deleted: the end of a log is where
// failures show. A byte offset maps to one chunk, so a page costs one or
// two reads; a page names where it starts, the size so far and what was
// dropped. After each chunk the log stores its point: the engine timestamp
// of the last container line and the position where the bytes written so
// far end. A re-attach continues after that timestamp, and reopening the
// log first discards what was stored past the position (a crash between the
// chunk and the point), so every line is in the log once. Storage calls of
// the writer are bounded, so a hung storage never blocks the container's
// output; a storage error is reported when the log closes.
//
// # Storage
//
// The worker keeps watch/state, watch/last_successful_commit, runs/<id> and
// runlog/<id>/ (StorageKeys), as JSON encoded as Vault's
// logical.StorageEntryJSON does, through the four-method Storage. None of
// them holds a secret; commands must not print any.
package watch
