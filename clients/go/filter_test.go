package tributary_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	tributary "github.com/tributary/tributary/clients/go"
)

// statusChanges makes n records over keys prefix0..prefix(keys-1) whose JSON value's status
// moves between "open" and "closed" from one round over the keys to the next; every thirteenth
// record is a tombstone.
func statusChanges(prefix string, start, n, keys int) [][2]*string {
	out := make([][2]*string, 0, n)
	for i := start; i < start+n; i++ {
		round, key := i/keys, i%keys
		name := fmt.Sprintf("%s%d", prefix, key)
		if i%13 == 12 {
			out = append(out, tomb(name))
			continue
		}
		status := "closed"
		if (round*3+key)%5 < 3 {
			status = "open"
		}
		out = append(out, kv(name, fmt.Sprintf(`{"id":%d,"status":%q,"n":%d}`, key, status, i)))
	}
	return out
}

// isOpen reads value as JSON, without the gateway's code: its "status" is "open".
func isOpen(value []byte) bool {
	var v struct {
		Status *string `json:"status"`
	}
	return value != nil && json.Unmarshal(value, &v) == nil && v.Status != nil && *v.Status == "open"
}

// filterHandler is a stateHandler that also checks what a record filter with
// TombstoneMismatches delivers: only open values, and tombstones (recorded) for the rest.
type filterHandler struct {
	*stateHandler
	mu         sync.Mutex
	tombstones map[tributary.TopicPartition][]int64 // offsets of streamed tombstones, in order
	problems   []string
}

func (h *filterHandler) Reset(ctx context.Context) error {
	h.mu.Lock()
	h.tombstones = map[tributary.TopicPartition][]int64{}
	h.mu.Unlock()
	return h.stateHandler.Reset(ctx)
}

func (h *filterHandler) Apply(ctx context.Context, changes []tributary.Change, position tributary.Position) error {
	h.mu.Lock()
	for _, c := range changes {
		tp := tributary.TopicPartition{Topic: c.Topic, Partition: c.Partition}
		switch {
		case c.Snapshot && !isOpen(c.Value):
			h.problems = append(h.problems, fmt.Sprintf("%v: snapshot entry %d (%q) is not open", tp, c.Offset, c.Value))
		case !c.Snapshot && c.Tombstone():
			h.tombstones[tp] = append(h.tombstones[tp], c.Offset)
		case !c.Snapshot && !isOpen(c.Value):
			h.problems = append(h.problems, fmt.Sprintf("%v: streamed record %d (%q) is not open", tp, c.Offset, c.Value))
		}
	}
	h.mu.Unlock()
	return h.stateHandler.Apply(ctx, changes, position)
}

// A record filter on a JSON field with TombstoneMismatches, while A moves keys in and out of
// the selection during the snapshot and the stream: B's model ends as exactly the keys whose
// latest value is open, and every record after the snapshot comes once, in order, as itself
// when it is open and as a tombstone of its key when it is not.
func TestRecordFilterTombstoneMismatches(t *testing.T) {
	const keys = 50
	k := newKafka(t)
	topic := k.topic("recfilter", 3)
	k.produce(topic, statusChanges("s-", 0, 300, keys)...)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)

	produced := make(chan error, 1)
	go func() {
		for i := 300; i < 2300; i += 40 {
			if err := k.produceE(topic, statusChanges("s-", i, 40, keys)...); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	}()
	h := &filterHandler{stateHandler: newStateHandler(), tombstones: map[tributary.TopicPartition][]int64{}}
	store := &recordingStore{}
	filter := &tributary.RecordFilter{
		Fields:              []tributary.FieldCondition{{Pointer: "/status", AnyOf: []string{`"open"`}}},
		TombstoneMismatches: true,
	}
	f := startFollow(c, tributary.FollowOptions{Topics: []string{topic}, RecordFilter: filter, Store: store, MaxBatchRecords: 50}, h)
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	reaches(t, store, k.endOffsets(topic), f)
	if err := f.stop(t); err != nil {
		t.Fatalf("Follow returned %v after the cancel, want nil", err)
	}
	if h.resetCount() != 1 || h.snapshots == 0 {
		t.Errorf("resets %d, snapshot entries %d: want one snapshot with entries", h.resetCount(), h.snapshots)
	}

	// What a raw consumer computes: the keys whose latest value is open.
	records := k.readAll(topic)
	want := map[string]string{}
	for key, v := range rebuild(records) {
		if isOpen([]byte(v)) {
			want[key] = v
		}
	}
	if len(want) == 0 || len(want) == keys {
		t.Fatalf("%d of %d keys end open: the test does not exercise the filter", len(want), keys)
	}
	got := h.snapshotState()
	if !maps.Equal(got, want) {
		t.Errorf("model differs from the open keys of the rebuild from Kafka: %d keys, want %d", len(got), len(want))
		for key, v := range want {
			if got[key] != v {
				t.Errorf("  key %q: got %q, want %q", key, got[key], v)
			}
		}
		for key, v := range got {
			if _, ok := want[key]; !ok {
				t.Errorf("  key %q (%q): should be absent", key, v)
			}
		}
	}

	from := store.snapshotPosition()
	offsets := map[int32][]int64{}
	tombstones := map[int32][]int64{}
	mismatches := 0
	for _, r := range records {
		tp := tributary.TopicPartition{Topic: topic, Partition: r.partition}
		if o, ok := from[tp]; ok && r.offset >= o {
			offsets[r.partition] = append(offsets[r.partition], r.offset)
			if !isOpen(r.value) {
				tombstones[r.partition] = append(tombstones[r.partition], r.offset)
				if r.value != nil {
					mismatches++
				}
			}
		}
	}
	if mismatches == 0 {
		t.Error("no closed value was written after the snapshot: the mismatch tombstones were not exercised")
	}
	h.mu.Lock()
	for tp := range from {
		if got := h.streamedOffsets(tp); !slices.Equal(got, offsets[tp.Partition]) {
			t.Errorf("%v: streamed offsets %v, want %v (every record from %d, once)", tp, got, offsets[tp.Partition], from[tp])
		}
		if got := h.tombstones[tp]; !slices.Equal(got, tombstones[tp.Partition]) {
			t.Errorf("%v: streamed tombstones %v, want %v (the tombstones and closed values from %d)", tp, got, tombstones[tp.Partition], from[tp])
		}
	}
	for _, p := range h.problems {
		t.Error(p)
	}
	h.mu.Unlock()
	h.check(t)
	if errs := f.reported(); len(errs) > 0 {
		t.Errorf("errors reported during a quiet follow: %v", errs)
	}
}

// A bad record filter (a pointer without its leading "/") stops Follow with INVALID_ARGUMENT
// naming the field, from the snapshot (an empty store) and from the stream (a saved position).
func TestRecordFilterInvalid(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("badfilter", 1)
	k.produce(topic, kv("a", `{"status":"open"}`))
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	bad := &tributary.RecordFilter{Fields: []tributary.FieldCondition{{Pointer: "status", AnyOf: []string{`"open"`}}}}
	check := func(what string, err error) {
		t.Helper()
		e, ok := tributary.AsError(err)
		if !ok || e.Code != codes.InvalidArgument || len(e.FieldViolations) != 1 ||
			e.FieldViolations[0].Field != "record_filter.fields[0].pointer" || e.FieldViolations[0].Description == "" {
			var violations []tributary.FieldViolation
			if ok {
				violations = e.FieldViolations
			}
			t.Errorf("%s: Follow returned %v with violations %+v, want INVALID_ARGUMENT on record_filter.fields[0].pointer", what, err, violations)
		}
	}

	err := tributary.Follow(ctx, c, tributary.FollowOptions{Topics: []string{topic}, RecordFilter: bad}, newStateHandler())
	check("snapshot", err)

	store := tributary.NewMemoryStore()
	if err := store.Save(ctx, tributary.Position{{Topic: topic, Partition: 0}: 0}); err != nil {
		t.Fatal(err)
	}
	h := newStateHandler()
	err = tributary.Follow(ctx, c, tributary.FollowOptions{Topics: []string{topic}, RecordFilter: bad, Store: store}, h)
	check("subscribe", err)
	if h.resetCount() != 0 {
		t.Errorf("the follow from a saved position took a snapshot (%d resets)", h.resetCount())
	}
}
