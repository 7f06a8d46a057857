package tributary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// TranslatorRef names one of B's translators and its configuration.
type TranslatorRef struct {
	// Name as registered.
	Name string
	// SHA-256 (lowercase hex) of the version to pin; empty takes the latest version.
	Digest string
	// Configuration passed to the translator's init.
	Config string
	// Skip records whose translation returns an error value instead of ending the call.
	SkipErrors bool
}

func (t *TranslatorRef) proto() *pb.TranslatorRef {
	if t == nil {
		return nil
	}
	return &pb.TranslatorRef{Name: t.Name, Digest: t.Digest, Config: t.Config, SkipErrors: t.SkipErrors}
}

// KeyFilter keeps the records whose key equals one of Exact or starts with one of Prefixes.
type KeyFilter struct {
	Exact    [][]byte
	Prefixes [][]byte
}

func (k *KeyFilter) proto() *pb.KeyFilter {
	if k == nil {
		return nil
	}
	return &pb.KeyFilter{Exact: k.Exact, Prefixes: k.Prefixes}
}

// RecordFilter keeps the records that meet every condition (checked on the gateway, on A's
// records, before translation). A streamed keyed record that fails is left out by default, so a
// key whose value moves out of the selection keeps its last matching value; with
// TombstoneMismatches it is delivered as a tombstone of its key, so the model holds exactly the
// keys whose latest record matches. A snapshot leaves out keys whose latest record fails either
// way. See docs/contract.md, "Selecting records: key and record filters".
type RecordFilter struct {
	Headers             []HeaderCondition
	Fields              []FieldCondition
	TombstoneMismatches bool
}

// HeaderCondition holds when the record has header Key (any value, null included) if AnyOf is
// empty, else when one occurrence of it has one of these values (byte for byte).
type HeaderCondition struct {
	Key   string
	AnyOf [][]byte
}

// FieldCondition holds when the record's value, read as JSON, has a field at the JSON Pointer
// (RFC 6901: "/status", "/owner/id"; "" is the whole value) if AnyOf is empty, else when that
// field equals one of these JSON texts: `"open"` (a string, with its quotes), `42`, `null`.
// A tombstone passes field conditions.
type FieldCondition struct {
	Pointer string
	AnyOf   []string
}

func (r *RecordFilter) proto() *pb.RecordFilter {
	if r == nil {
		return nil
	}
	out := &pb.RecordFilter{TombstoneMismatches: r.TombstoneMismatches}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, &pb.HeaderCondition{Key: h.Key, AnyOf: h.AnyOf})
	}
	for _, c := range r.Fields {
		out.Fields = append(out.Fields, &pb.FieldCondition{Pointer: c.Pointer, AnyOf: c.AnyOf})
	}
	return out
}

// Handler is B's side of a follow: its state.
type Handler interface {
	// Reset forgets all state: a snapshot follows.
	Reset(ctx context.Context) error
	// Apply applies changes in order. position is where the follow stands once they are
	// applied; it is nil while a snapshot is still arriving.
	Apply(ctx context.Context, changes []Change, position Position) error
}

// FollowOptions configures Follow. Topics is required unless the follow resumes a named
// subscription.
type FollowOptions struct {
	Topics     []string
	Translator *TranslatorRef
	KeyFilter  *KeyFilter
	// Only records whose headers and JSON fields meet these conditions.
	RecordFilter *RecordFilter
	// A durable subscription's name: the position is also committed to the gateway under this
	// name, and a follow that starts with an empty store resumes from the committed position.
	SubscriptionName string
	// Upper bound on records in one batch; 0 takes the gateway's default.
	MaxBatchRecords uint32
	// While B falls behind, the gateway sends only the latest record per key (tombstones
	// included); the state after each progress is exact and offsets still resume exactly. For a
	// B that wants A's current state more than every step of it. See docs/contract.md,
	// "Conflation".
	Conflate bool
	// Where the position is kept; nil keeps it in memory (a new MemoryStore).
	Store Store
	// How often the position is committed at most (with SubscriptionName); default 1 s.
	CommitInterval time.Duration
	// Backoff between retries: full jitter, from BackoffInitial (default 100 ms) doubling up to
	// BackoffMax (default 10 s); back to BackoffInitial once a message has arrived.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// Called with every error that does not stop the follow: a stream that failed and is
	// retried, a position that is too old (before the new snapshot), a failed commit. May be nil.
	OnError func(err error)
}

// Follow makes handler follow the topics: a snapshot, then every change after it, with no gap
// and no duplicate, across restarts of B (through the Store), of the gateway and Kafka's
// retention. It implements clients/FOLLOW.md.
//
// Follow runs until ctx is cancelled, then finishes the batch being applied, commits the last
// position (with SubscriptionName) and returns nil. Handler and Store calls get a context that
// carries ctx's values but is not cancelled with it, so the batch in hand completes.
//
// It returns a *Error for a gateway error that retrying cannot fix (INVALID_ARGUMENT,
// NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION, a translator's failure,
// ABORTED with reason SUBSCRIPTION_TAKEN_OVER, ...), and the error of a Handler or Store
// (wrapped; errors.Is and errors.As see it), after which the store holds the last position
// saved before it, so the next run redoes the failed batch.
func Follow(ctx context.Context, client *Client, opts FollowOptions, handler Handler) error {
	if client == nil || handler == nil {
		return errors.New("tributary: Follow needs a client and a handler")
	}
	if len(opts.Topics) == 0 && opts.SubscriptionName == "" {
		return errors.New("tributary: Follow needs topics or a subscription name")
	}
	f := newFollower(ctx, client, opts, handler)
	position, err := f.store.Load(f.appCtx)
	if err != nil {
		return fmt.Errorf("tributary: store Load: %w", err)
	}
	f.position = position
	return f.run(ctx)
}

// newFollower applies the options' defaults; client may be nil until one is chosen (a fleet).
func newFollower(ctx context.Context, client *Client, opts FollowOptions, handler Handler) *follower {
	f := &follower{
		client:  client,
		opts:    opts,
		handler: handler,
		store:   opts.Store,
		appCtx:  context.WithoutCancel(ctx),
	}
	if f.store == nil {
		f.store = NewMemoryStore()
	}
	if f.opts.CommitInterval <= 0 {
		f.opts.CommitInterval = time.Second
	}
	if f.opts.BackoffInitial <= 0 {
		f.opts.BackoffInitial = 100 * time.Millisecond
	}
	if f.opts.BackoffMax <= 0 {
		f.opts.BackoffMax = 10 * time.Second
	}
	f.opts.BackoffMax = max(f.opts.BackoffMax, f.opts.BackoffInitial)
	f.backoff = newBackoff(f.opts.BackoffInitial, f.opts.BackoffMax)
	return f
}

type follower struct {
	client  *Client
	opts    FollowOptions
	handler Handler
	store   Store
	appCtx  context.Context // for the handler, the store and the last commit: not cancelled
	backoff *backoff

	position   Position // the last saved position; nil: none (snapshot, or resume by name)
	committed  Position // the last committed position
	lastCommit time.Time
	skipResume bool // go straight to the snapshot: nothing committed, or committed too old

	fleet *fleet // the replicas of a fleet (FollowFleet), nil for Follow
}

// appError is an error of the handler or the store: it stops the follow as it is.
type appError struct{ err error }

func (e *appError) Error() string { return e.err.Error() }
func (e *appError) Unwrap() error { return e.err }

// errEndedWithoutStatus is a stream that ended without a status (or a snapshot without its
// last chunk): retried like UNAVAILABLE.
var errEndedWithoutStatus = errors.New("tributary: the stream ended without a status")

// run follows from f.position (loaded from the store).
func (f *follower) run(ctx context.Context) error {
	for {
		var err error
		switch {
		case f.position != nil:
			err = f.subscribe(ctx, false)
		case f.opts.SubscriptionName != "" && !f.skipResume:
			err = f.subscribe(ctx, true)
			if e, ok := AsError(err); ok && ctx.Err() == nil &&
				(e.Code == codes.FailedPrecondition && e.Reason == "NO_COMMITTED_POSITION" ||
					e.Code == codes.NotFound && e.Reason == "UNKNOWN_SUBSCRIPTION") {
				f.skipResume = true
				continue
			}
		default:
			err = f.snapshot(ctx)
			if err == nil {
				continue
			}
		}

		var app *appError
		if errors.As(err, &app) {
			return app.err
		}
		if ctx.Err() != nil {
			return f.stop()
		}
		retry, e := classify(err)
		if !retry {
			return e
		}
		if e != nil && e.Code == codes.OutOfRange {
			if err := f.store.Clear(f.appCtx); err != nil {
				return fmt.Errorf("tributary: store Clear: %w", err)
			}
			f.position = nil
			f.skipResume = true
		}
		f.report(err)
		if !f.wait(ctx) {
			return f.stop()
		}
	}
}

// classify says whether the follow goes on after err, and decodes it.
func classify(err error) (retry bool, decoded *Error) {
	if errors.Is(err, errEndedWithoutStatus) {
		return true, nil
	}
	e := asError(err)
	switch e.Code {
	case codes.OutOfRange, codes.Unavailable, codes.DeadlineExceeded:
		return true, e
	case codes.Aborted:
		return e.Reason != "SUBSCRIPTION_TAKEN_OVER", e
	case codes.ResourceExhausted:
		return e.Reason == "LIMIT_REACHED", e
	case codes.Internal:
		// A reset stream (RST_STREAM) surfaces as INTERNAL with no details; the gateway's own
		// INTERNAL errors carry an ErrorInfo and are not retried.
		return e.Reason == "", e
	}
	return false, e
}

func (f *follower) report(err error) {
	if f.opts.OnError == nil {
		return
	}
	if _, raw := err.(interface{ GRPCStatus() *status.Status }); raw {
		err = asError(err) // a status error of grpc itself, not yet decoded
	}
	f.opts.OnError(err)
}

// wait sleeps for the next backoff; false when ctx ended first.
func (f *follower) wait(ctx context.Context) bool {
	timer := time.NewTimer(f.backoff.next())
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
	}
	// The connection may itself be waiting to reconnect: try at once.
	if f.fleet != nil {
		f.fleet.resetConnectBackoff()
	} else {
		f.client.conn.ResetConnectBackoff()
	}
	return true
}

// stop ends the follow cleanly: the position is saved; commit it.
func (f *follower) stop() error {
	if f.opts.SubscriptionName != "" && f.position != nil {
		f.commit()
	}
	return nil
}

func (f *follower) snapshot(ctx context.Context) error {
	offsets, err := f.readSnapshot(ctx, f.client, true)
	if err != nil {
		return err
	}
	// Subscribing with these offsets (and the name) records them as the committed start, so
	// there is nothing to commit here.
	return f.save(offsets, false)
}

// readSnapshot applies client's snapshot to the handler (reset first, with the store cleared,
// when reset is true) and returns its offsets once the last chunk has been applied.
func (f *follower) readSnapshot(ctx context.Context, client *Client, reset bool) (Position, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Gateway.GetSnapshot(ctx, &pb.GetSnapshotRequest{
		Topics:       f.opts.Topics,
		KeyFilter:    f.opts.KeyFilter.proto(),
		RecordFilter: f.opts.RecordFilter.proto(),
		Translator:   f.opts.Translator.proto(),
	})
	if err != nil {
		return nil, err
	}
	var offsets Position
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			return nil, errEndedWithoutStatus
		}
		if err != nil {
			return nil, err
		}
		f.backoff.reset()
		if offsets == nil {
			offsets = PositionFromProto(chunk.GetOffsets())
			if reset {
				if err := f.handler.Reset(f.appCtx); err != nil {
					return nil, &appError{fmt.Errorf("tributary: handler Reset: %w", err)}
				}
				if err := f.store.Clear(f.appCtx); err != nil {
					return nil, &appError{fmt.Errorf("tributary: store Clear: %w", err)}
				}
			}
		}
		if entries := chunk.GetEntries(); len(entries) > 0 {
			changes := make([]Change, len(entries))
			for i, e := range entries {
				changes[i] = changeFromEntry(e)
			}
			if err := f.handler.Apply(f.appCtx, changes, nil); err != nil {
				return nil, &appError{fmt.Errorf("tributary: handler Apply: %w", err)}
			}
		}
		if chunk.GetLast() {
			return offsets, nil
		}
	}
}

// subscribe follows from the saved position, or resumes the named subscription from its
// committed position (resume, with no position).
func (f *follower) subscribe(ctx context.Context, resume bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &pb.SubscribeRequest{
		Topics:           f.opts.Topics,
		KeyFilter:        f.opts.KeyFilter.proto(),
		RecordFilter:     f.opts.RecordFilter.proto(),
		MaxBatchRecords:  f.opts.MaxBatchRecords,
		Translator:       f.opts.Translator.proto(),
		SubscriptionName: f.opts.SubscriptionName,
		Conflate:         f.opts.Conflate,
	}
	if !resume {
		req.FromOffsets = f.position.Proto()
	}
	stream, err := f.client.Gateway.Subscribe(ctx, req)
	if err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return errEndedWithoutStatus
		}
		if err != nil {
			return err
		}
		f.backoff.reset()
		switch m := msg.GetMessage().(type) {
		case *pb.SubscribeResponse_Records:
			records := m.Records.GetRecords()
			if len(records) == 0 {
				continue
			}
			if err := f.applyRecords(records, true); err != nil {
				return err
			}
		case *pb.SubscribeResponse_Progress:
			next := f.position.Merge(PositionFromProto(m.Progress.GetOffsets()))
			if err := f.save(next, true); err != nil {
				return err
			}
		}
	}
}

// applyRecords hands records to the handler with the position after them, then saves that
// position (committing it when due and commit is set).
func (f *follower) applyRecords(records []*pb.Record, commit bool) error {
	next := f.position.advance(records)
	changes := make([]Change, len(records))
	for i, r := range records {
		changes[i] = changeFromRecord(r)
	}
	if err := f.handler.Apply(f.appCtx, changes, next.Clone()); err != nil {
		return &appError{fmt.Errorf("tributary: handler Apply: %w", err)}
	}
	return f.save(next, commit)
}

// save stores position (unless it is already what is saved) and commits it when due.
func (f *follower) save(position Position, commit bool) error {
	if f.position == nil || !f.position.Equal(position) {
		if err := f.store.Save(f.appCtx, position); err != nil {
			return &appError{fmt.Errorf("tributary: store Save: %w", err)}
		}
	}
	f.position = position
	if commit && f.opts.SubscriptionName != "" && time.Since(f.lastCommit) >= f.opts.CommitInterval {
		f.commit()
	}
	return nil
}

// commitTimeout bounds one Commit call.
const commitTimeout = 10 * time.Second

// commit commits the saved position under the subscription's name, if it changed. A failure
// goes to OnError and is retried at a later save.
func (f *follower) commit() {
	if f.committed != nil && f.committed.Equal(f.position) {
		return
	}
	f.lastCommit = time.Now()
	ctx, cancel := context.WithTimeout(f.appCtx, commitTimeout)
	defer cancel()
	_, err := f.client.Subscriptions.Commit(ctx, &pb.CommitRequest{
		Name:    f.opts.SubscriptionName,
		Offsets: f.position.Proto(),
	})
	if err != nil {
		f.report(fmt.Errorf("tributary: commit %q: %w", f.opts.SubscriptionName, asError(err)))
		return
	}
	f.committed = f.position.Clone()
}
