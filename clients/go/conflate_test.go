package tributary_test

import (
	"context"
	"testing"
	"time"

	tributary "github.com/tributary/tributary/clients/go"
)

// slowHandler is a stateHandler whose Apply takes a while per batch, so the follow falls behind
// A; it counts the changes it applies.
type slowHandler struct {
	*stateHandler
	delay   time.Duration
	applied int // changes applied, snapshot entries included (under stateHandler.mu)
}

func (h *slowHandler) Apply(ctx context.Context, changes []tributary.Change, position tributary.Position) error {
	time.Sleep(h.delay)
	h.mu.Lock()
	h.applied += len(changes)
	h.mu.Unlock()
	return h.stateHandler.Apply(ctx, changes, position)
}

func (h *slowHandler) appliedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.applied
}

// With Conflate, a B that applies slowly while A rewrites a few keys many times ends with
// exactly the state a raw consumer rebuilds from Kafka, at the end offsets, having applied fewer
// changes than A wrote (the gateway sent only the latest record per key while B was behind), and
// the records it got still come in offset order.
func TestConflateSlowReader(t *testing.T) {
	const keys, total, chunk = 10, 5000, 100
	k := newKafka(t)
	topic := k.topic("conflate", 1)
	k.produce(topic, changes("c-", 0, keys, keys)...)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)

	h := &slowHandler{stateHandler: newStateHandler(), delay: 20 * time.Millisecond}
	store := &recordingStore{}
	f := startFollow(c, tributary.FollowOptions{Topics: []string{topic}, Store: store, Conflate: true, MaxBatchRecords: 50}, h)
	eventually(t, 30*time.Second, "the snapshot", func() bool { return store.snapshotPosition() != nil })

	for i := keys; i < total; i += chunk {
		k.produce(topic, changes("c-", i, min(chunk, total-i), keys)...)
	}
	reaches(t, store, k.endOffsets(topic), f)
	if err := f.stop(t); err != nil {
		t.Fatalf("Follow returned %v after the cancel, want nil", err)
	}
	if h.resetCount() != 1 {
		t.Errorf("%d resets, want one snapshot", h.resetCount())
	}

	records := checkState(t, k, topic, h.stateHandler)

	if len(records) != total {
		t.Fatalf("Kafka holds %d records, want %d", len(records), total)
	}
	from := store.snapshotPosition()
	tp := tributary.TopicPartition{Topic: topic, Partition: 0}
	written := 0
	for _, r := range records {
		if r.offset >= from[tp] {
			written++
		}
	}
	streamed := len(h.streamedOffsets(tp))
	t.Logf("applied %d changes (%d streamed) for %d records written after the snapshot at %d", h.appliedCount(), streamed, written, from[tp])
	if streamed == 0 || streamed >= written {
		t.Errorf("streamed %d records of the %d written after the snapshot: want fewer (conflation), and some", streamed, written)
	}
	if h.appliedCount() >= total {
		t.Errorf("applied %d changes, want fewer than the %d written", h.appliedCount(), total)
	}
	h.check(t)
	if errs := f.reported(); len(errs) > 0 {
		t.Errorf("errors reported during a quiet follow: %v", errs)
	}
}
