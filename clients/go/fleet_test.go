package tributary_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	tributary "github.com/tributary/tributary/clients/go"
	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// fleetSessionMs is the replicas' session timeout (the broker's group.min.session.timeout.ms).
const fleetSessionMs = 6000

// startReplica starts a replica of the sharded fleet group, as the real binary.
func startReplica(t *testing.T, topic, group, instanceID string) *gateway {
	t.Helper()
	return startGateway(t, gatewayConfig{topics: []string{topic}, env: []string{
		"TRIBUTARY__SHARDING__GROUP=" + group,
		"TRIBUTARY__SHARDING__INSTANCE_ID=" + instanceID,
		fmt.Sprintf("TRIBUTARY__SHARDING__SESSION_TIMEOUT_MS=%d", fleetSessionMs),
	}})
}

// owners is each partition's owner as the replica at c reports it; nil while one is moving or
// the group is not stable.
func owners(t *testing.T, c *tributary.Client, topic string) map[int32]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	topology, err := c.Gateway.GetTopology(ctx, &pb.GetTopologyRequest{Topics: []string{topic}})
	if err != nil {
		return nil
	}
	if !topology.GetSharded() {
		t.Fatalf("a replica of a group reports an unsharded topology: %v", topology)
	}
	if topology.GetGroupState() != "Stable" {
		return nil
	}
	out := map[int32]string{}
	for _, p := range topology.GetPartitions() {
		if p.GetMoving() || p.GetOwner() == "" {
			return nil
		}
		out[p.GetPartition()] = p.GetOwner()
	}
	return out
}

// settled waits until every one of clients reports the same stable topology and done holds.
func settled(t *testing.T, clients []*tributary.Client, topic string, done func(map[int32]string) bool) map[int32]string {
	t.Helper()
	var found map[int32]string
	eventually(t, 60*time.Second, "the topology to settle", func() bool {
		first := owners(t, clients[0], topic)
		if first == nil || !done(first) {
			return false
		}
		for _, c := range clients[1:] {
			if !maps.Equal(owners(t, c, topic), first) {
				return false
			}
		}
		found = first
		return true
	})
	return found
}

// fleetHandler is stateHandler, also counting the positions that do not name every partition.
type fleetHandler struct {
	*stateHandler
	partitions int
	partial    atomic.Int64
}

func (h *fleetHandler) Apply(ctx context.Context, changes []tributary.Change, position tributary.Position) error {
	if position != nil && len(position) != h.partitions {
		h.partial.Add(1)
	}
	return h.stateHandler.Apply(ctx, changes, position)
}

// startFleetFollow runs FollowFleet in the background.
func startFleetFollow(seeds []string, opts tributary.FollowOptions, h tributary.Handler) *follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{cancel: cancel, done: make(chan error, 1)}
	opts.OnError = func(err error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.errors = append(f.errors, err)
	}
	go func() { f.done <- tributary.FollowFleet(ctx, seeds, opts, h, tributary.WithInsecure()) }()
	return f
}

// plusOne is end + 1 on the given partitions: reached once a record written after end was
// applied on each.
func plusOne(end tributary.Position, topic string, partitions []int32) tributary.Position {
	out := tributary.Position{}
	for _, p := range partitions {
		tp := tributary.TopicPartition{Topic: topic, Partition: p}
		out[tp] = end[tp] + 1
	}
	return out
}

func heldBy(topology map[int32]string, address string) []int32 {
	var out []int32
	for p, o := range topology {
		if o == address {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Three replicas share six partitions while a producer writes; two followers (through different
// seeds) follow every partition through a kill -9 of one replica and its restart (same instance
// id, same address). Each ends at the raw rebuild from Kafka with every record after its
// snapshot applied once, in offset order per partition, and every position naming every
// partition.
func TestFleetFollowThroughKillAndRestart(t *testing.T) {
	const partitions = 6
	k := newKafka(t)
	topic := k.topic("fleet", partitions)
	k.produce(topic, changes("f-", 0, 3000, 600)...)
	group := randomName("go-fleet-group")
	r1 := startReplica(t, topic, group, "r1")
	r2 := startReplica(t, topic, group, "r2")
	r3 := startReplica(t, topic, group, "r3")
	c1, c2, c3 := r1.dial(), r2.dial(), r3.dial()
	all := []*tributary.Client{c1, c2, c3}
	topology := settled(t, all, topic, func(o map[int32]string) bool {
		return len(o) == partitions && len(heldBy(o, r1.addr)) > 0 && len(heldBy(o, r2.addr)) > 0 && len(heldBy(o, r3.addr)) > 0
	})

	// The producer keeps writing until told to stop.
	var writing atomic.Bool
	writing.Store(true)
	produced := make(chan error, 1)
	var written atomic.Int64
	go func() {
		for i := 3000; writing.Load(); i += 30 {
			if err := k.produceE(topic, changes("f-", i, 30, 600)...); err != nil {
				produced <- err
				return
			}
			written.Add(30)
			time.Sleep(10 * time.Millisecond)
		}
		produced <- nil
	}()
	stopWriting := sync.OnceValue(func() error { writing.Store(false); return <-produced })
	t.Cleanup(func() { _ = stopWriting() })

	opts := tributary.FollowOptions{Topics: []string{topic}, MaxBatchRecords: 100, BackoffMax: time.Second}
	type fleetFollower struct {
		h     *fleetHandler
		store *recordingStore
		f     *follower
	}
	var followers []fleetFollower
	for _, seeds := range [][]string{{r1.addr}, {r2.addr, r3.addr}} {
		ff := fleetFollower{h: &fleetHandler{stateHandler: newStateHandler(), partitions: partitions}, store: &recordingStore{}}
		o := opts
		o.Store = ff.store
		ff.f = startFleetFollow(seeds, o, ff.h)
		followers = append(followers, ff)
	}
	reachAll := func(end tributary.Position) {
		t.Helper()
		for _, ff := range followers {
			reaches(t, ff.store, end, ff.f)
		}
	}
	reachAll(k.endOffsets(topic))

	// kill -9: r1's partitions are unserved until its session times out, then followed on their
	// new owners from where each follower stood.
	heldByR1 := heldBy(topology, r1.addr)
	atKill := k.endOffsets(topic)
	r1.kill()
	killed := time.Now()
	reachAll(plusOne(atKill, topic, heldByR1))
	served := time.Since(killed)
	settled(t, []*tributary.Client{c2, c3}, topic, func(o map[int32]string) bool {
		return len(o) == partitions && len(heldBy(o, r1.addr)) == 0
	})
	if served < fleetSessionMs/2*time.Millisecond {
		t.Errorf("a killed replica's partitions move only once its session times out, yet they were served after %v", served)
	}
	t.Logf("kill -9 of %s: its partitions %v were applied again after %v (session timeout %d ms)", r1.addr, heldByR1, served, fleetSessionMs)

	// The killed replica comes back (same instance id, same address): partitions move to it
	// while the followers' streams on them are open.
	r1.start()
	restarted := time.Now()
	topology = settled(t, all, topic, func(o map[int32]string) bool {
		return len(o) == partitions && len(heldBy(o, r1.addr)) > 0
	})
	settledAfter := time.Since(restarted)
	heldByR1 = heldBy(topology, r1.addr)
	atJoin := k.endOffsets(topic) // written after the move: only r1 serves these
	reachAll(plusOne(atJoin, topic, heldByR1))
	t.Logf("restart of %s: it took partitions %v after %v; the followers applied records written there after %v",
		r1.addr, heldByR1, settledAfter, time.Since(restarted))

	if err := stopWriting(); err != nil {
		t.Fatal(err)
	}
	end := k.endOffsets(topic)
	reachAll(end)
	t.Logf("%d records written while following", written.Load())

	for i, ff := range followers {
		if err := ff.f.stop(t); err != nil {
			t.Fatalf("follower %d: FollowFleet returned %v after the cancel, want nil", i, err)
		}
		if n := ff.h.resetCount(); n != 1 {
			t.Errorf("follower %d: %d resets, want one snapshot (a moved partition is no reset)", i, n)
		}
		if n := ff.h.partial.Load(); n > 0 {
			t.Errorf("follower %d: %d positions did not name every partition", i, n)
		}
		from := ff.store.snapshotPosition()
		if len(from) != partitions {
			t.Fatalf("follower %d: the snapshot's position %v does not name the %d partitions", i, from, partitions)
		}
		checkExact(t, k, topic, ff.h.stateHandler, from)
		t.Logf("follower %d: %d errors reported and retried (first: %v)", i, len(ff.f.reported()), first(ff.f.reported()))
	}
}

func first(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// A named subscription cannot follow a sharded fleet: refused at once, before any snapshot.
func TestFleetRefusesSubscriptionName(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("fleet-named", 2)
	k.produce(topic, changes("n-", 0, 20, 10)...)
	r := startReplica(t, topic, randomName("go-fleet-named"), "r1")
	h := newStateHandler()
	store := &recordingStore{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := tributary.FollowFleet(ctx, []string{r.addr},
		tributary.FollowOptions{Topics: []string{topic}, SubscriptionName: randomName("go-sub"), Store: store}, h, tributary.WithInsecure())
	if !errors.Is(err, &tributary.Error{Code: codes.InvalidArgument}) {
		t.Fatalf("FollowFleet with a name on a sharded fleet returned %v, want INVALID_ARGUMENT", err)
	}
	if h.resetCount() != 0 || store.snapshotPosition() != nil {
		t.Error("the refused follow touched the handler or the store")
	}
	if ctx.Err() != nil {
		t.Error("the refusal waited for the context")
	}
}

// A gateway without sharding is followed as Follow does, through the seed that answers (the
// first is unreachable), a subscription name included.
func TestFleetUnshardedIsAFollow(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("fleet-plain", 3)
	k.produce(topic, changes("p-", 0, 300, 60)...)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)

	h := newStateHandler()
	store := &recordingStore{}
	name := randomName("go-fleet-sub")
	f := startFleetFollow([]string{"127.0.0.1:1", g.addr},
		tributary.FollowOptions{Topics: []string{topic}, Store: store, SubscriptionName: name, MaxBatchRecords: 50}, h)
	eventually(t, 30*time.Second, "the snapshot", func() bool { return store.snapshotPosition() != nil })
	for i := 300; i < 1300; i += 50 {
		k.produce(topic, changes("p-", i, 50, 60)...)
	}
	end := k.endOffsets(topic)
	reaches(t, store, end, f)
	if err := f.stop(t); err != nil {
		t.Fatalf("FollowFleet returned %v after the cancel, want nil", err)
	}
	if h.resetCount() != 1 {
		t.Errorf("%d resets, want 1", h.resetCount())
	}
	checkExact(t, k, topic, h, store.snapshotPosition())
	// The name was followed as Follow does: its committed position is where the follow stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := c.Subscriptions.Describe(ctx, &pb.DescribeSubscriptionRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	committed := tributary.Position{}
	for _, p := range info.GetPartitions() {
		committed[tributary.TopicPartition{Topic: p.GetTopic(), Partition: p.GetPartition()}] = p.GetCommittedOffset()
	}
	if !committed.Equal(end) {
		t.Errorf("committed %v, want %v", committed, end)
	}
	if errs := f.reported(); len(errs) > 0 {
		t.Logf("reported (the unreachable seed is expected): %v", errs)
	}
}

// A stream follows only its partitions: a Subscribe on a replica also reads the partitions it
// holds and does not list (from their start), and those records and progress offsets are
// dropped. Here the store names partition 0 only (as after partitions were added to the topic):
// partition 1, held by the same replica, must not reach the handler or the position.
func TestFleetFollowsOnlyItsPartitions(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("fleet-own", 2)
	k.produce(topic, changes("o-", 0, 200, 40)...)
	r := startReplica(t, topic, randomName("go-fleet-own"), "r1")
	settled(t, []*tributary.Client{r.dial()}, topic, func(o map[int32]string) bool { return len(o) == 2 })
	end := k.endOffsets(topic)
	p0 := tributary.TopicPartition{Topic: topic, Partition: 0}
	p1 := tributary.TopicPartition{Topic: topic, Partition: 1}
	if end[p0] == 0 || end[p1] == 0 {
		t.Fatalf("the keys did not spread over both partitions: %v", end)
	}
	h := newStateHandler()
	store := &recordingStore{}
	_ = store.Save(context.Background(), tributary.Position{p0: 0})
	f := startFleetFollow([]string{r.addr}, tributary.FollowOptions{Topics: []string{topic}, Store: store, MaxBatchRecords: 20}, h)
	reaches(t, store, tributary.Position{p0: end[p0]}, f)
	time.Sleep(500 * time.Millisecond) // progress messages (every 200 ms) would name partition 1
	if err := f.stop(t); err != nil {
		t.Fatal(err)
	}
	if got := h.streamedOffsets(p1); len(got) > 0 {
		t.Errorf("partition 1, not in the position, reached the handler: %d records", len(got))
	}
	if got, want := len(h.streamedOffsets(p0)), int(end[p0]); got != want {
		t.Errorf("partition 0: %d records applied, want %d", got, want)
	}
	if saved, _ := store.Load(context.Background()); !saved.Equal(tributary.Position{p0: end[p0]}) {
		t.Errorf("saved %v, want only partition 0 at %d", saved, end[p0])
	}
	if h.resetCount() != 0 {
		t.Errorf("%d resets: a saved position is followed, not snapshotted", h.resetCount())
	}
	h.check(t)
}
