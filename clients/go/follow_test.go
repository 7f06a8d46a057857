package tributary_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	tributary "github.com/tributary/tributary/clients/go"
)

// Handoff: a producer writes while the follower snapshots and follows; at the end the
// follower's state is the rebuild from Kafka and no record was applied twice.
func TestHandoff(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("handoff", 3)
	k.produce(topic, changes("key-", 0, 300, 60)...)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)

	produced := make(chan error, 1)
	go func() {
		for i := 300; i < 2300; i += 40 {
			if err := k.produceE(topic, changes("key-", i, 40, 60)...); err != nil {
				produced <- err
				return
			}
		}
		produced <- nil
	}()
	h := newStateHandler()
	store := &recordingStore{}
	f := startFollow(c, tributary.FollowOptions{Topics: []string{topic}, Store: store, MaxBatchRecords: 50}, h)
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
	from := store.snapshotPosition()
	streamed := 0
	for tp := range from {
		streamed += len(h.streamedOffsets(tp))
	}
	if streamed == 0 {
		t.Error("no record was streamed after the snapshot: the handoff was not exercised")
	}
	checkExact(t, k, topic, h, from)
	if errs := f.reported(); len(errs) > 0 {
		t.Errorf("errors reported during a quiet follow: %v", errs)
	}
}

// A gateway restart (stop, start again on the same port) loses nothing and repeats nothing.
func TestResumeAfterGatewayRestart(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("restart", 2)
	k.produce(topic, changes("r-", 0, 100, 30)...)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)

	h := newStateHandler()
	store := &recordingStore{}
	f := startFollow(c, tributary.FollowOptions{Topics: []string{topic}, Store: store, BackoffMax: 500 * time.Millisecond}, h)
	k.produce(topic, changes("r-", 100, 100, 30)...)
	reaches(t, store, k.endOffsets(topic), f)

	g.stop()
	k.produce(topic, changes("r-", 200, 100, 30)...) // while the gateway is down
	g.start()
	k.produce(topic, changes("r-", 300, 100, 30)...)
	reaches(t, store, k.endOffsets(topic), f)
	if err := f.stop(t); err != nil {
		t.Fatalf("Follow returned %v, want nil", err)
	}
	if h.resetCount() != 1 {
		t.Errorf("%d resets: the follow took a new snapshot instead of resuming", h.resetCount())
	}
	unavailable := false
	for _, err := range f.reported() {
		if e, ok := tributary.AsError(err); ok && e.Code == codes.Unavailable {
			unavailable = true
		}
	}
	if !unavailable {
		t.Errorf("no UNAVAILABLE was reported while the gateway restarted: %v", f.reported())
	}
	checkExact(t, k, topic, h, store.snapshotPosition())
}

// A handler that fails stops the follow with its error; the position stays before the batch.
func TestHandlerErrorStops(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("fail", 1)
	k.produce(topic, changes("f-", 0, 10, 10)...)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)

	boom := errors.New("boom")
	h := &failingHandler{stateHandler: newStateHandler(), fail: boom}
	store := tributary.NewMemoryStore()
	f := startFollow(c, tributary.FollowOptions{Topics: []string{topic}, Store: store}, h)
	// The snapshot goes through; the first streamed batch fails.
	eventually(t, 30*time.Second, "the snapshot to be saved", func() bool {
		p, _ := store.Load(context.Background())
		return p != nil
	})
	k.produce(topic, kv("f-new", "x"))
	select {
	case err := <-f.done:
		if !errors.Is(err, boom) {
			t.Fatalf("Follow returned %v, want the handler's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Follow did not stop after the handler failed")
	}
	p, _ := store.Load(context.Background())
	tp := tributary.TopicPartition{Topic: topic, Partition: 0}
	if p[tp] != 10 {
		t.Errorf("saved position %v, want offset 10 (before the failed batch)", p)
	}
}

type failingHandler struct {
	*stateHandler
	fail error
}

func (h *failingHandler) Apply(ctx context.Context, changes []tributary.Change, position tributary.Position) error {
	if len(changes) > 0 && !changes[0].Snapshot {
		return h.fail
	}
	return h.stateHandler.Apply(ctx, changes, position)
}
