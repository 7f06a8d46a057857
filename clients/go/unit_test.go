package tributary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

func tp(topic string, partition int32) TopicPartition {
	return TopicPartition{Topic: topic, Partition: partition}
}

func TestPositionMergeAndAdvance(t *testing.T) {
	p := Position{tp("a", 0): 5, tp("a", 1): 7}
	merged := p.Merge(Position{tp("a", 1): 9, tp("b", 0): 1})
	want := Position{tp("a", 0): 5, tp("a", 1): 9, tp("b", 0): 1}
	if !merged.Equal(want) {
		t.Errorf("merge: %v, want %v", merged, want)
	}
	if p[tp("a", 1)] != 7 {
		t.Error("merge changed its receiver")
	}
	// Offsets are not contiguous: the next offset is the last record's + 1, whatever came before.
	next := p.advance([]*pb.Record{
		{Topic: "a", Partition: 0, Offset: 5}, {Topic: "a", Partition: 0, Offset: 8}, {Topic: "c", Partition: 2, Offset: 3},
	})
	want = Position{tp("a", 0): 9, tp("a", 1): 7, tp("c", 2): 4}
	if !next.Equal(want) {
		t.Errorf("advance: %v, want %v", next, want)
	}
	var none Position
	if got := none.advance([]*pb.Record{{Topic: "a", Offset: 0}}); !got.Equal(Position{tp("a", 0): 1}) {
		t.Errorf("advance of no position: %v", got)
	}
	// Proto is sorted by topic, then partition; PositionFromProto inverts it.
	offsets := want.Proto()
	order := ""
	for _, o := range offsets {
		order += fmt.Sprintf("%s%d=%d ", o.Topic, o.Partition, o.Offset)
	}
	if order != "a0=9 a1=7 c2=4 " {
		t.Errorf("proto order %q", order)
	}
	if !PositionFromProto(offsets).Equal(want) {
		t.Error("PositionFromProto does not invert Proto")
	}
}

func TestErrorDecoding(t *testing.T) {
	s, err := status.New(codes.OutOfRange, "offset 3 of t/0 is no longer retained").WithDetails(
		&errdetails.ErrorInfo{Reason: "OFFSET_TOO_OLD", Domain: "tributary.v1", Metadata: map[string]string{"topic": "t"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "from_offsets[0].offset", Description: "too old"}}},
		&pb.OffsetsDetail{Kind: pb.OffsetsDetail_EARLIEST, Offsets: []*pb.PartitionOffset{{Topic: "t", Partition: 0, Offset: 10}}},
		durationpb.New(time.Second), // unknown to the client: ignored
	)
	if err != nil {
		t.Fatal(err)
	}
	wrapped := fmt.Errorf("call: %w", s.Err())
	e, ok := AsError(wrapped)
	if !ok {
		t.Fatal("AsError did not decode a wrapped status error")
	}
	if e.Code != codes.OutOfRange || e.Message != "offset 3 of t/0 is no longer retained" || e.Reason != "OFFSET_TOO_OLD" ||
		e.Domain != "tributary.v1" || e.Metadata["topic"] != "t" {
		t.Errorf("decoded %+v", e)
	}
	if len(e.FieldViolations) != 1 || e.FieldViolations[0] != (FieldViolation{"from_offsets[0].offset", "too old"}) {
		t.Errorf("field violations %+v", e.FieldViolations)
	}
	if e.OffsetsKind != OffsetsEarliest || !e.Offsets.Equal(Position{tp("t", 0): 10}) {
		t.Errorf("offsets %s %v", e.OffsetsKind, e.Offsets)
	}
	if got := e.Error(); got != "tributary: OutOfRange (OFFSET_TOO_OLD): offset 3 of t/0 is no longer retained" {
		t.Errorf("Error() = %q", got)
	}
	if status.Code(e) != codes.OutOfRange || !proto.Equal(e.GRPCStatus().Proto(), s.Proto()) {
		t.Error("the *Error does not give back its status")
	}
	if !errors.Is(e, &Error{Code: codes.OutOfRange}) || errors.Is(e, &Error{Code: codes.OutOfRange, Reason: "OFFSET_BEYOND_END"}) {
		t.Error("errors.Is compares code and reason")
	}
	for _, err := range []error{nil, io.EOF, context.Canceled, errors.New("x")} {
		if _, ok := AsError(err); ok {
			t.Errorf("AsError(%v) is true", err)
		}
	}
	plain, _ := AsError(status.Error(codes.Unavailable, "down"))
	if plain.Reason != "" || plain.OffsetsKind != OffsetsNone || plain.Offsets != nil {
		t.Errorf("a status without details: %+v", plain)
	}
}

func TestClassify(t *testing.T) {
	withReason := func(code codes.Code, reason string) error {
		s, _ := status.New(code, "m").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "tributary.v1"})
		return s.Err()
	}
	for _, c := range []struct {
		err   error
		retry bool
	}{
		{status.Error(codes.Unavailable, "connection refused"), true},
		{withReason(codes.Unavailable, "SHUTTING_DOWN"), true},
		{withReason(codes.OutOfRange, "OFFSET_TOO_OLD"), true},
		{status.Error(codes.DeadlineExceeded, ""), true},
		{withReason(codes.Aborted, "SOMETHING"), true},
		{withReason(codes.Aborted, "SUBSCRIPTION_TAKEN_OVER"), false},
		{withReason(codes.ResourceExhausted, "LIMIT_REACHED"), true},
		{withReason(codes.ResourceExhausted, "TRANSLATOR_MEMORY"), false},
		{status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: INTERNAL_ERROR"), true},
		{withReason(codes.Internal, "INTERNAL"), false},
		{errEndedWithoutStatus, true},
		{withReason(codes.InvalidArgument, "INVALID_ARGUMENT"), false},
		{withReason(codes.NotFound, "UNKNOWN_TOPIC"), false},
		{status.Error(codes.PermissionDenied, ""), false},
		{status.Error(codes.Unauthenticated, ""), false},
		{withReason(codes.FailedPrecondition, "TRANSLATOR_TRAP"), false},
		{withReason(codes.DataLoss, "TRANSLATOR_DAMAGED"), false},
	} {
		retry, e := classify(c.err)
		if retry != c.retry {
			t.Errorf("classify(%v) retries: %v, want %v", c.err, retry, c.retry)
		}
		if !retry && e == nil {
			t.Errorf("classify(%v) gave no error to return", c.err)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := newBackoff(100*time.Millisecond, time.Second)
	var asked []int64
	b.random = func(n int64) int64 { asked = append(asked, n); return n - 1 } // the top of each range
	var waits []time.Duration
	for range 6 {
		waits = append(waits, b.next())
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if waits[i] != w*time.Millisecond {
			t.Errorf("wait %d: %v, want %v", i, waits[i], w*time.Millisecond)
		}
	}
	b.reset()
	if w := b.next(); w != 100*time.Millisecond {
		t.Errorf("after reset: %v", w)
	}
	// Full jitter: anywhere from 0 to the ceiling.
	b = newBackoff(100*time.Millisecond, 10*time.Second)
	for range 1000 {
		if w := b.next(); w < 0 || w > 10*time.Second {
			t.Fatalf("wait %v out of [0, 10s]", w)
		}
	}
}

func TestFileStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := NewFileStore(filepath.Join(dir, "pos.json"))
	if p, err := s.Load(ctx); p != nil || err != nil {
		t.Fatalf("a missing file: %v, %v", p, err)
	}
	want := Position{tp("a", 0): 5, tp("b", 3): 1 << 40}
	if err := s.Save(ctx, want); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, want.Merge(Position{tp("a", 0): 6})); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx)
	if err != nil || !got.Equal(Position{tp("a", 0): 6, tp("b", 3): 1 << 40}) {
		t.Fatalf("load: %v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
	if err := s.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Load(ctx); p != nil || err != nil {
		t.Fatalf("after clear: %v, %v", p, err)
	}
	if err := s.Clear(ctx); err != nil {
		t.Errorf("clearing twice: %v", err)
	}
	if err := os.WriteFile(s.Path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx); err == nil {
		t.Error("a damaged file loads")
	}

	m := NewMemoryStore()
	_ = m.Save(ctx, want)
	loaded, _ := m.Load(ctx)
	loaded[tp("a", 0)] = 0
	if again, _ := m.Load(ctx); !again.Equal(want) {
		t.Error("MemoryStore hands out its own map")
	}
}

// Keys and values keep their presence: absent (keyless, tombstone) is not empty.
func TestChangePresence(t *testing.T) {
	data, err := proto.Marshal(&pb.Record{Key: []byte{}, Value: nil, Headers: []*pb.Header{{Key: "n"}, {Key: "e", Value: []byte{}}}})
	if err != nil {
		t.Fatal(err)
	}
	var r pb.Record
	if err := proto.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	c := changeFromRecord(&r)
	if c.Key == nil || len(c.Key) != 0 {
		t.Errorf("an empty key became %v", c.Key)
	}
	if !c.Tombstone() {
		t.Error("an absent value is not a tombstone")
	}
	if c.Headers[0].Value != nil || c.Headers[1].Value == nil {
		t.Errorf("header presence lost: %+v", c.Headers)
	}
	data, _ = proto.Marshal(&pb.SnapshotEntry{Key: []byte("k"), Value: []byte{}})
	var e pb.SnapshotEntry
	_ = proto.Unmarshal(data, &e)
	if c := changeFromEntry(&e); c.Tombstone() || !c.Snapshot {
		t.Errorf("an empty snapshot value is a tombstone: %+v", c)
	}
}

// The filters become their messages; nil is no filter.
func TestFilterProto(t *testing.T) {
	var none *RecordFilter
	if none.proto() != nil {
		t.Error("a nil RecordFilter is not a nil message")
	}
	f := &RecordFilter{
		Headers:             []HeaderCondition{{Key: "type"}, {Key: "v", AnyOf: [][]byte{[]byte("1"), {}}}},
		Fields:              []FieldCondition{{Pointer: "/status", AnyOf: []string{`"open"`}}, {Pointer: "/owner/id"}},
		TombstoneMismatches: true,
	}
	want := &pb.RecordFilter{
		Headers:             []*pb.HeaderCondition{{Key: "type"}, {Key: "v", AnyOf: [][]byte{[]byte("1"), {}}}},
		Fields:              []*pb.FieldCondition{{Pointer: "/status", AnyOf: []string{`"open"`}}, {Pointer: "/owner/id"}},
		TombstoneMismatches: true,
	}
	if got := f.proto(); !proto.Equal(got, want) {
		t.Errorf("RecordFilter.proto() = %v, want %v", got, want)
	}
}
