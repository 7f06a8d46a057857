package tributary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// FollowFleet follows opts.Topics through a fleet of gateways that share the partitions
// ([sharding] group, docs/sharding.md), reached at seeds ("host:port" or any gRPC target). Every
// connection is dialled with dialOpts (TLS, token, ...). It implements clients/FOLLOW.md,
// "Sharded fleets", with the same Handler, Store and options as Follow.
//
// A gateway without sharding (GetTopology says sharded false, or is UNIMPLEMENTED) is followed
// exactly as Follow does, on the seed that answered. On a sharded fleet: one snapshot per owner,
// merged into one Reset and one snapshot; then one stream per owner, applied one batch at a time
// with the whole merged position; a partition that moves (PARTITION_NOT_HELD, PARTITION_MOVING, a
// replica down) is followed to its new owner from its own offset, with no reset. A
// SubscriptionName on a sharded fleet is refused with an INVALID_ARGUMENT *Error: each replica
// keeps the names opened on it, so the store is the only position.
//
// It returns as Follow does: nil once ctx is cancelled, a *Error that retrying cannot fix, or the
// Handler's or Store's error.
func FollowFleet(ctx context.Context, seeds []string, opts FollowOptions, handler Handler, dialOpts ...Option) error {
	if len(seeds) == 0 {
		return &Error{Code: codes.InvalidArgument, Message: "a fleet needs at least one seed address"}
	}
	if handler == nil {
		return errors.New("tributary: FollowFleet needs a handler")
	}
	if len(opts.Topics) == 0 && opts.SubscriptionName == "" {
		return errors.New("tributary: FollowFleet needs topics or a subscription name")
	}
	fl := &fleet{seeds: slices.Clone(seeds), dialOpts: dialOpts, clients: map[string]*Client{}}
	defer fl.close()
	f := newFollower(ctx, nil, opts, handler)
	f.fleet = fl
	position, err := f.store.Load(f.appCtx)
	if err != nil {
		return fmt.Errorf("tributary: store Load: %w", err)
	}
	f.position = position

	var address string
	var topology *pb.GetTopologyResponse
	for {
		address, topology, err = fl.topology(ctx, f.opts.Topics)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if retry, e := classify(err); !retry {
			return e
		}
		f.report(err)
		if !f.wait(ctx) {
			return nil
		}
	}
	f.backoff.reset()
	if !topology.GetSharded() {
		if f.client, err = fl.client(address); err != nil {
			return err
		}
		return f.run(ctx)
	}
	if f.opts.SubscriptionName != "" {
		return &Error{Code: codes.InvalidArgument, Message: "a named subscription cannot follow a sharded fleet: the store keeps the position"}
	}
	return f.runSharded(ctx, topology)
}

// fleet is the replicas known so far and a connection to each.
type fleet struct {
	seeds    []string
	dialOpts []Option
	mu       sync.Mutex
	clients  map[string]*Client
}

// topologyTimeout bounds one GetTopology call.
const topologyTimeout = 10 * time.Second

// client returns the connection to address, dialling it the first time. Dial does not connect:
// a replica that is down is an UNAVAILABLE call later.
func (fl *fleet) client(address string) (*Client, error) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if c, ok := fl.clients[address]; ok {
		return c, nil
	}
	c, err := Dial(context.Background(), address, fl.dialOpts...)
	if err != nil {
		return nil, err
	}
	fl.clients[address] = c
	return c, nil
}

// topology asks the seeds, then every other replica known, for the topology of topics; it
// returns the first answer and who gave it. UNIMPLEMENTED (a gateway older than sharding) is an
// unsharded topology.
func (fl *fleet) topology(ctx context.Context, topics []string) (string, *pb.GetTopologyResponse, error) {
	addresses := slices.Clone(fl.seeds)
	fl.mu.Lock()
	known := slices.Sorted(maps.Keys(fl.clients))
	fl.mu.Unlock()
	for _, a := range known {
		if !slices.Contains(addresses, a) {
			addresses = append(addresses, a)
		}
	}
	var last error = &Error{Code: codes.Unavailable, Message: "no replica answered GetTopology"}
	for _, address := range addresses {
		c, err := fl.client(address)
		if err != nil {
			return "", nil, err
		}
		callCtx, cancel := context.WithTimeout(ctx, topologyTimeout)
		topology, err := c.Gateway.GetTopology(callCtx, &pb.GetTopologyRequest{Topics: topics})
		cancel()
		if err == nil {
			return address, topology, nil
		}
		if status.Code(err) == codes.Unimplemented {
			return address, &pb.GetTopologyResponse{}, nil
		}
		if ctx.Err() != nil {
			return "", nil, ctx.Err()
		}
		last = err
	}
	return "", nil, last
}

func (fl *fleet) resetConnectBackoff() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for _, c := range fl.clients {
		c.conn.ResetConnectBackoff()
	}
}

func (fl *fleet) close() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for _, c := range fl.clients {
		_ = c.Close()
	}
}

// partitionSet is a set of partitions.
type partitionSet map[TopicPartition]struct{}

func (s partitionSet) sorted() []TopicPartition {
	keys := slices.Collect(maps.Keys(s))
	sort.Slice(keys, func(i, j int) bool {
		if c := strings.Compare(keys[i].Topic, keys[j].Topic); c != 0 {
			return c < 0
		}
		return keys[i].Partition < keys[j].Partition
	})
	return keys
}

// byOwner groups the wanted partitions by their owner in topology; the ones no replica holds
// (moving, without owner, or unknown to the topology) come back apart.
func byOwner(topology *pb.GetTopologyResponse, wanted partitionSet) (map[string]partitionSet, partitionSet) {
	owners := map[string]partitionSet{}
	unowned := maps.Clone(wanted)
	if unowned == nil {
		unowned = partitionSet{}
	}
	for _, p := range topology.GetPartitions() {
		tp := TopicPartition{Topic: p.GetTopic(), Partition: p.GetPartition()}
		if _, ok := unowned[tp]; !ok || p.GetMoving() || p.GetOwner() == "" {
			continue
		}
		delete(unowned, tp)
		if owners[p.GetOwner()] == nil {
			owners[p.GetOwner()] = partitionSet{}
		}
		owners[p.GetOwner()][tp] = struct{}{}
	}
	return owners, unowned
}

// topologyPartitions is every partition topology describes.
func topologyPartitions(topology *pb.GetTopologyResponse) partitionSet {
	out := partitionSet{}
	for _, p := range topology.GetPartitions() {
		out[TopicPartition{Topic: p.GetTopic(), Partition: p.GetPartition()}] = struct{}{}
	}
	return out
}

// mergeDisjoint adds one owner's snapshot offsets to merged; a partition already there (two
// owners served it: it moved between their snapshots) is refused and merged left untouched.
func mergeDisjoint(merged, part Position) (TopicPartition, bool) {
	for _, tp := range part.Partitions() {
		if _, ok := merged[tp]; ok {
			return tp, false
		}
	}
	maps.Copy(merged, part)
	return TopicPartition{}, true
}

// moved is a stream that ended because its partitions are held elsewhere now.
func moved(e *Error) bool {
	return e != nil && e.Code == codes.FailedPrecondition && e.Reason == "PARTITION_NOT_HELD"
}

// runSharded follows the fleet: snapshot when there is no position, then the streams; a
// position that cannot be continued (OUT_OF_RANGE) is a new snapshot.
func (f *follower) runSharded(ctx context.Context, topology *pb.GetTopologyResponse) error {
	for {
		err := f.shardedAttempt(ctx, topology)
		topology = nil
		var app *appError
		if errors.As(err, &app) {
			return app.err
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			continue // a snapshot: now the streams
		}
		retry, e := classify(err)
		if e != nil && e.Code == codes.OutOfRange {
			if err := f.store.Clear(f.appCtx); err != nil {
				return fmt.Errorf("tributary: store Clear: %w", err)
			}
			f.position = nil
		} else if !retry && !moved(e) {
			return e
		}
		f.report(err)
		if !f.wait(ctx) {
			return nil
		}
	}
}

// shardedAttempt takes a snapshot (no position; returns nil once it is saved) or follows the
// streams until one of them fails in a way routing cannot fix.
func (f *follower) shardedAttempt(ctx context.Context, topology *pb.GetTopologyResponse) error {
	if topology == nil {
		var err error
		if _, topology, err = f.fleet.topology(ctx, f.opts.Topics); err != nil {
			return err
		}
	}
	if f.position == nil {
		return f.fleetSnapshot(ctx, topology)
	}
	return f.fleetStreams(ctx, topology)
}

// fleetSnapshot reads one snapshot per owner into one reset and snapshot; the position is the
// union of their offsets, which must name every partition of the topology exactly once.
func (f *follower) fleetSnapshot(ctx context.Context, topology *pb.GetTopologyResponse) error {
	wanted := topologyPartitions(topology)
	owners, unowned := byOwner(topology, wanted)
	if len(unowned) > 0 {
		return &Error{Code: codes.Unavailable, Message: fmt.Sprintf("partitions %v have no owner yet", unowned.sorted())}
	}
	merged := Position{}
	for i, owner := range slices.Sorted(maps.Keys(owners)) {
		client, err := f.fleet.client(owner)
		if err != nil {
			return err
		}
		// One reset, before the first owner's first chunk: the owners' snapshots are one.
		offsets, err := f.readSnapshot(ctx, client, i == 0)
		if err != nil {
			return err
		}
		if tp, ok := mergeDisjoint(merged, offsets); !ok {
			return &Error{Code: codes.Unavailable, Message: fmt.Sprintf("partition %v moved during the snapshot", tp)}
		}
	}
	if len(merged) != len(wanted) || !containsAll(merged, wanted) {
		return &Error{Code: codes.Unavailable, Message: "partitions moved during the snapshot: the owners' snapshots do not cover the topics"}
	}
	return f.save(merged, false)
}

func containsAll(p Position, set partitionSet) bool {
	for tp := range set {
		if _, ok := p[tp]; !ok {
			return false
		}
	}
	return true
}

// fleetStream is a stream open on one replica.
type fleetStream struct {
	owner      string
	partitions partitionSet // the ones it follows; the replica's others are dropped
	cancel     context.CancelFunc
	delivered  bool // a message came: the replica is up and serves it
}

// fleetEvent is what a stream's goroutine tells the follow: a message, or its end.
type fleetEvent struct {
	id  uint64
	msg *pb.SubscribeResponse
	end bool
	err error // with end: nil when the stream ended without a status
}

// fleetStreams follows the position with one stream per owner; the partitions of a stream that
// ends are routed again (after a backoff) to whoever holds them then. It returns on OUT_OF_RANGE,
// an error that retrying cannot fix, or ctx's end.
func (f *follower) fleetStreams(ctx context.Context, topology *pb.GetTopologyResponse) error {
	ctx, cancelAll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancelAll()
	events := make(chan fleetEvent, 64)
	live := map[uint64]*fleetStream{}
	var nextID uint64
	pending := partitionSet{}
	for tp := range f.position {
		pending[tp] = struct{}{}
	}
	// The routing's own backoff: it grows until a stream it opened delivers (messages of the
	// other streams say nothing about a replica that is down).
	route := newBackoff(f.opts.BackoffInitial, f.opts.BackoffMax)
	timer := time.NewTimer(0)
	defer timer.Stop()
	armed := true
	arm := func() {
		if !armed {
			timer.Reset(route.next())
			armed = true
		}
	}

	open := func(owner string, group partitionSet) error {
		client, err := f.fleet.client(owner)
		if err != nil {
			return err
		}
		client.conn.ResetConnectBackoff()
		from := make([]*pb.PartitionOffset, 0, len(group))
		for _, tp := range group.sorted() {
			from = append(from, &pb.PartitionOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: f.position[tp]})
		}
		req := &pb.SubscribeRequest{
			FromOffsets:     from,
			KeyFilter:       f.opts.KeyFilter.proto(),
			RecordFilter:    f.opts.RecordFilter.proto(),
			MaxBatchRecords: f.opts.MaxBatchRecords,
			Translator:      f.opts.Translator.proto(),
			Conflate:        f.opts.Conflate,
		}
		streamCtx, cancel := context.WithCancel(ctx)
		id := nextID
		nextID++
		live[id] = &fleetStream{owner: owner, partitions: group, cancel: cancel}
		wg.Add(1)
		go func() {
			defer wg.Done()
			readStream(streamCtx, id, client, req, events)
		}()
		return nil
	}

	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()

		case <-timer.C:
			armed = false
			current := topology
			topology = nil
			if current == nil {
				var err error
				if _, current, err = f.fleet.topology(ctx, f.opts.Topics); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					if retry, e := classify(err); !retry {
						return e
					}
					f.report(err)
					arm()
					continue
				}
			}
			owners, unowned := byOwner(current, pending)
			for _, owner := range slices.Sorted(maps.Keys(owners)) {
				group := owners[owner]
				// One stream per replica: a Subscribe also reads the replica's partitions it
				// does not list (from their start), so a second stream there would read them
				// twice. The one there now ends and the new one takes its partitions on at the
				// position.
				for id, s := range live {
					if s.owner == owner {
						s.cancel()
						delete(live, id)
						maps.Copy(group, s.partitions)
					}
				}
				if err := open(owner, group); err != nil {
					return err
				}
			}
			pending = unowned
			if len(pending) > 0 {
				arm()
			}

		case ev := <-events:
			s, ok := live[ev.id]
			if !ok {
				continue // a stream ended meanwhile: its successor reads this again
			}
			if ev.end {
				delete(live, ev.id)
				s.cancel()
				err := ev.err
				if err == nil {
					err = errEndedWithoutStatus
				}
				retry, e := classify(err)
				if e != nil && e.Code == codes.OutOfRange || !retry && !moved(e) {
					return err // a new snapshot (OUT_OF_RANGE) or a refusal: the caller decides
				}
				f.report(err)
				maps.Copy(pending, s.partitions)
				arm()
				continue
			}
			if !s.delivered {
				s.delivered = true
				route.reset()
			}
			f.backoff.reset()
			if err := f.applyFleetMessage(s.partitions, ev.msg); err != nil {
				return err
			}
		}
	}
}

// applyFleetMessage applies one message of a stream that follows partitions: its records and
// progress offsets for any other partition are dropped.
func (f *follower) applyFleetMessage(partitions partitionSet, msg *pb.SubscribeResponse) error {
	ours := func(topic string, partition int32) bool {
		_, ok := partitions[TopicPartition{Topic: topic, Partition: partition}]
		return ok
	}
	switch m := msg.GetMessage().(type) {
	case *pb.SubscribeResponse_Records:
		var records []*pb.Record
		for _, r := range m.Records.GetRecords() {
			if ours(r.GetTopic(), r.GetPartition()) {
				records = append(records, r)
			}
		}
		if len(records) == 0 {
			return nil
		}
		return f.applyRecords(records, false)
	case *pb.SubscribeResponse_Progress:
		next := f.position.Clone()
		for _, o := range m.Progress.GetOffsets() {
			if ours(o.GetTopic(), o.GetPartition()) {
				next[TopicPartition{Topic: o.GetTopic(), Partition: o.GetPartition()}] = o.GetOffset()
			}
		}
		return f.save(next, false)
	}
	return nil
}

// readStream reads one Subscribe stream into events, then says how it ended. It gives up as
// soon as ctx ends (the follow ended the stream).
func readStream(ctx context.Context, id uint64, client *Client, req *pb.SubscribeRequest, events chan<- fleetEvent) {
	send := func(ev fleetEvent) bool {
		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	stream, err := client.Gateway.Subscribe(ctx, req)
	if err != nil {
		send(fleetEvent{id: id, end: true, err: err})
		return
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			send(fleetEvent{id: id, end: true})
			return
		}
		if err != nil {
			send(fleetEvent{id: id, end: true, err: err})
			return
		}
		if !send(fleetEvent{id: id, msg: msg}) {
			return
		}
	}
}
