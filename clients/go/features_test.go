package tributary_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tributary "github.com/tributary/tributary/clients/go"
	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// deleteRecords deletes every record of topic's partition 0 before offset.
func (k *kafka) deleteRecords(topic string, before int64) {
	k.t.Helper()
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: topic, Partition: 0, At: before, LeaderEpoch: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := k.admin.DeleteRecords(ctx, os)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		k.t.Fatalf("DeleteRecords: %v", err)
	}
}

// OUT_OF_RANGE: the saved position is older than what Kafka retains; the follower clears it,
// snapshots again (a reset) and goes on exactly.
func TestOutOfRangeRecovery(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("oor", 1)
	tp := tributary.TopicPartition{Topic: topic, Partition: 0}
	k.produce(topic, changes("o-", 0, 20, 10)...)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)

	h := newStateHandler()
	store := tributary.NewFileStore(filepath.Join(t.TempDir(), "position.json"))
	f := startFollow(c, tributary.FollowOptions{Topics: []string{topic}, Store: store}, h)
	reaches(t, store, tributary.Position{tp: 20}, f)
	if err := f.stop(t); err != nil {
		t.Fatal(err)
	}
	if saved, _ := store.Load(context.Background()); saved[tp] != 20 {
		t.Fatalf("the file store holds %v, want offset 20", saved)
	}

	// B is away while A writes and retention deletes what B has not read.
	k.produce(topic, changes("o-", 20, 20, 10)...)
	k.deleteRecords(topic, 30)
	// The gateway learns the new earliest offset at its next refresh (kafka.metadata_refresh_ms).
	eventually(t, 30*time.Second, "the gateway to see earliest offset 30", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.Gateway.DescribeTopics(ctx, &pb.DescribeTopicsRequest{Topics: []string{topic}})
		return err == nil && len(resp.GetTopics()) == 1 && resp.GetTopics()[0].GetPartitions()[0].GetEarliestOffset() == 30
	})

	recording := &recordingStore{}
	saved, _ := store.Load(context.Background())
	_ = recording.Save(context.Background(), saved)
	f = startFollow(c, tributary.FollowOptions{Topics: []string{topic}, Store: recording}, h)
	reaches(t, recording, tributary.Position{tp: 40}, f)
	if err := f.stop(t); err != nil {
		t.Fatal(err)
	}
	if h.resetCount() != 2 {
		t.Errorf("%d resets, want 2 (the first snapshot and the one after OUT_OF_RANGE)", h.resetCount())
	}
	var outOfRange *tributary.Error
	for _, err := range f.reported() {
		if e, ok := tributary.AsError(err); ok && e.Code == codes.OutOfRange {
			outOfRange = e
		}
	}
	if outOfRange == nil {
		t.Fatalf("OUT_OF_RANGE was not reported: %v", f.reported())
	}
	if outOfRange.Reason != "OFFSET_TOO_OLD" || outOfRange.OffsetsKind != tributary.OffsetsEarliest || outOfRange.Offsets[tp] != 30 {
		t.Errorf("reported %v: reason %s, offsets %s %v; want OFFSET_TOO_OLD, EARLIEST %v=30", outOfRange, outOfRange.Reason, outOfRange.OffsetsKind, outOfRange.Offsets, tp)
	}
	if p := recording.snapshotPosition(); p[tp] != 40 {
		t.Errorf("the new snapshot is at %v, want offset 40", p)
	}
	checkExact(t, k, topic, h, recording.snapshotPosition())
}

// The gateway's error details are decoded: NOT_FOUND with UNKNOWN_TOPIC, INVALID_ARGUMENT with a
// BadRequest field, OUT_OF_RANGE with the EARLIEST (or LATEST) offsets.
func TestErrorDetails(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("errors", 1)
	tp := tributary.TopicPartition{Topic: topic, Partition: 0}
	k.produce(topic, changes("e-", 0, 10, 5)...)
	k.deleteRecords(topic, 4)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	firstError := func(recv func() error) *tributary.Error {
		t.Helper()
		for {
			if err := recv(); err != nil {
				e, ok := tributary.AsError(err)
				if !ok {
					t.Fatalf("%v is not a gateway error", err)
				}
				return e
			}
		}
	}
	subscribeError := func(offset int64) *tributary.Error {
		t.Helper()
		stream, err := c.Gateway.Subscribe(ctx, &pb.SubscribeRequest{FromOffsets: []*pb.PartitionOffset{{Topic: topic, Partition: 0, Offset: offset}}})
		if err != nil {
			t.Fatal(err)
		}
		return firstError(func() error { _, err := stream.Recv(); return err })
	}

	snap, err := c.Gateway.GetSnapshot(ctx, &pb.GetSnapshotRequest{Topics: []string{"no-such-topic"}})
	if err != nil {
		t.Fatal(err)
	}
	e := firstError(func() error { _, err := snap.Recv(); return err })
	if e.Code != codes.NotFound || e.Reason != "UNKNOWN_TOPIC" || e.Domain != "tributary.v1" {
		t.Errorf("unknown topic: %v (reason %q, domain %q), want NOT_FOUND UNKNOWN_TOPIC tributary.v1", e, e.Reason, e.Domain)
	}

	e = subscribeError(-1)
	if e.Code != codes.InvalidArgument || len(e.FieldViolations) != 1 || e.FieldViolations[0].Field != "from_offsets[0].offset" || e.FieldViolations[0].Description == "" {
		t.Errorf("negative offset: %v with violations %+v, want INVALID_ARGUMENT on from_offsets[0].offset", e, e.FieldViolations)
	}

	e = subscribeError(0)
	if e.Code != codes.OutOfRange || e.Reason != "OFFSET_TOO_OLD" || e.OffsetsKind != tributary.OffsetsEarliest || !e.Offsets.Equal(tributary.Position{tp: 4}) {
		t.Errorf("too old: %v %s %v, want OUT_OF_RANGE OFFSET_TOO_OLD EARLIEST %v=4", e, e.OffsetsKind, e.Offsets, tp)
	}
	// The decoded error still works with errors.Is / errors.As and status.
	wrapped := fmt.Errorf("following: %w", e)
	var as *tributary.Error
	if !errors.As(wrapped, &as) || !errors.Is(wrapped, &tributary.Error{Code: codes.OutOfRange, Reason: "OFFSET_TOO_OLD"}) {
		t.Error("errors.As / errors.Is do not see the *Error")
	}
	if again, ok := tributary.AsError(wrapped); !ok || again != e {
		t.Error("AsError does not return the wrapped *Error")
	}

	e = subscribeError(100)
	if e.Code != codes.OutOfRange || e.Reason != "OFFSET_BEYOND_END" || e.OffsetsKind != tributary.OffsetsLatest || !e.Offsets.Equal(tributary.Position{tp: 10}) {
		t.Errorf("beyond the end: %v %s %v, want OUT_OF_RANGE OFFSET_BEYOND_END LATEST %v=10", e, e.OffsetsKind, e.Offsets, tp)
	}

	// Follow stops with the decoded error when retrying cannot help.
	err = tributary.Follow(ctx, c, tributary.FollowOptions{Topics: []string{"no-such-topic"}}, newStateHandler())
	if e, ok := tributary.AsError(err); !ok || e.Code != codes.NotFound || e.Reason != "UNKNOWN_TOPIC" {
		t.Errorf("Follow of an unknown topic returned %v, want NOT_FOUND UNKNOWN_TOPIC", err)
	}
}

// A translator: upload field-mapper.wasm with the Translators service and follow through it.
func TestTranslator(t *testing.T) {
	component, err := os.ReadFile(filepath.Join(repoRoot(t), "translators", "dist", "field-mapper.wasm"))
	if err != nil {
		t.Fatalf("%v (build the translators: scripts/build-translators.sh)", err)
	}
	k := newKafka(t)
	topic := k.topic("translator", 2)
	assignment := func(id int, station string, version int) [2]*string {
		return kv(fmt.Sprintf("assignment/%d", id), fmt.Sprintf(`{"id":%d,"station":%q,"status":"on-air","version":%d}`, id, station, version))
	}
	for id := range 20 {
		k.produce(topic, assignment(id, "north", 1))
	}
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	version, err := c.UploadTranslator(ctx, "b-model", component)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(component)
	if version.GetName() != "b-model" || version.GetDigest() != hex.EncodeToString(sum[:]) || version.GetVersion() != 1 || version.GetSize() != uint64(len(component)) {
		t.Fatalf("uploaded %v, want b-model version 1 with digest %x", version, sum)
	}
	info, err := c.Translators.Describe(ctx, &pb.DescribeTranslatorRequest{Name: "b-model"})
	if err != nil || len(info.GetVersions()) != 1 || info.GetVersions()[0].GetDigest() != version.GetDigest() {
		t.Fatalf("Describe: %v, %v", info, err)
	}

	// A configuration init rejects stops the follow with the decoded error.
	err = tributary.Follow(ctx, c, tributary.FollowOptions{
		Topics: []string{topic}, Translator: &tributary.TranslatorRef{Name: "b-model", Config: `{"nope":1}`},
	}, newStateHandler())
	if e, ok := tributary.AsError(err); !ok || e.Code != codes.InvalidArgument || e.Reason != "TRANSLATOR_CONFIG_REJECTED" || e.Metadata["translator"] != "b-model" {
		t.Errorf("a rejected configuration: %v, want INVALID_ARGUMENT TRANSLATOR_CONFIG_REJECTED", err)
	}

	h := newStateHandler()
	store := &recordingStore{}
	ref := &tributary.TranslatorRef{
		Name: "b-model", Digest: version.GetDigest(),
		Config: `{"rename": {"station": "location", "id": "assignment_id"}, "drop": ["version"], "key_prefix": "b/"}`,
	}
	f := startFollow(c, tributary.FollowOptions{Topics: []string{topic}, Translator: ref, Store: store}, h)
	eventually(t, 30*time.Second, "the snapshot", func() bool { return store.snapshotPosition() != nil })
	for id := 10; id < 30; id++ {
		k.produce(topic, assignment(id, "south", 2))
	}
	k.produce(topic, tomb("assignment/3"))
	reaches(t, store, k.endOffsets(topic), f)
	if err := f.stop(t); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{}
	for id := range 30 {
		station := "north"
		if id >= 10 {
			station = "south"
		}
		if id != 3 {
			want[fmt.Sprintf("b/assignment/%d", id)] = fmt.Sprintf(`{"assignment_id":%d,"location":%q,"status":"on-air"}`, id, station)
		}
	}
	if got := h.snapshotState(); !maps.Equal(got, want) {
		t.Errorf("translated state:\n got %v\nwant %v", got, want)
	}
	if h.snapshots != 20 {
		t.Errorf("%d snapshot entries, want 20", h.snapshots)
	}
	h.check(t)
}

// TLS with a client certificate (mutual TLS) and a bearer token, against a policy that lets
// only the token's identity read the topic.
func TestTLSAndToken(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("tls", 1)
	k.produce(topic, changes("t-", 0, 30, 10)...)
	tp := tributary.TopicPartition{Topic: topic, Partition: 0}

	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if out, err := exec.Command("bash", filepath.Join(repoRoot(t), "scripts", "certs.sh"), certs, "alice").CombinedOutput(); err != nil {
		t.Fatalf("certs.sh: %v\n%s", err, out)
	}
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(certs, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	const token = "b-service-secret-token"
	sum := sha256.Sum256([]byte(token))
	tokens := filepath.Join(dir, "tokens.toml")
	policy := filepath.Join(dir, "policy.toml")
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(tokens, fmt.Sprintf("[[token]]\nidentity = \"b-service\"\nsha256 = %q\n", hex.EncodeToString(sum[:])))
	write(policy, fmt.Sprintf("[[grant]]\nidentities = [\"b-service\"]\nread_topics = [%q]\n", topic))
	g := startGateway(t, gatewayConfig{topics: []string{topic}, extra: fmt.Sprintf(`
[tls]
cert_file = %q
key_file = %q
client_ca_file = %q

[auth]
tokens_file = %q
policy_file = %q
`, filepath.Join(certs, "server.pem"), filepath.Join(certs, "server.key"), filepath.Join(certs, "ca.pem"), tokens, policy)})

	secure := func(extra ...tributary.Option) *tributary.Client {
		opts := append([]tributary.Option{
			tributary.WithTLS(read("ca.pem")),
			tributary.WithClientCertificate(read("alice.pem"), read("alice.key")),
			tributary.WithServerName("localhost"),
		}, extra...)
		return g.dial(opts...)
	}
	c := secure(tributary.WithToken(token))
	waitReady(t, c)

	h := newStateHandler()
	store := &recordingStore{}
	f := startFollow(c, tributary.FollowOptions{Topics: []string{topic}, Store: store}, h)
	reaches(t, store, tributary.Position{tp: 30}, f)
	k.produce(topic, changes("t-", 30, 10, 10)...)
	reaches(t, store, tributary.Position{tp: 40}, f)
	if err := f.stop(t); err != nil {
		t.Fatal(err)
	}
	checkExact(t, k, topic, h, store.snapshotPosition())

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	follow := func(c *tributary.Client) error {
		return tributary.Follow(ctx, c, tributary.FollowOptions{Topics: []string{topic}}, newStateHandler())
	}
	// Without the token the caller is alice (her certificate), whom the policy does not let read.
	if e, ok := tributary.AsError(follow(secure())); !ok || e.Code != codes.PermissionDenied {
		t.Errorf("without the token: %v, want PERMISSION_DENIED", e)
	}
	if e, ok := tributary.AsError(follow(secure(tributary.WithToken("wrong")))); !ok || e.Code != codes.Unauthenticated {
		t.Errorf("with a wrong token: %v, want UNAUTHENTICATED", e)
	}
	// Without a client certificate, or without TLS, there is no connection at all.
	describe := func(c *tributary.Client) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := c.Gateway.DescribeTopics(ctx, &pb.DescribeTopicsRequest{})
		return err
	}
	noCert := g.dial(tributary.WithTLS(read("ca.pem")), tributary.WithToken(token))
	if err := describe(noCert); status.Code(err) != codes.Unavailable {
		t.Errorf("a client without a certificate: %v, want UNAVAILABLE (no handshake)", err)
	}
	if err := describe(g.dial(tributary.WithInsecure(), tributary.WithToken(token))); status.Code(err) != codes.Unavailable {
		t.Errorf("a plaintext client: %v, want UNAVAILABLE", err)
	}
}

// A durable subscription: follow by name, stop, follow again by name with an empty store: the
// follow goes on from the committed position with no snapshot, nothing lost, nothing repeated.
// A second follower that takes the name over stops the first with SUBSCRIPTION_TAKEN_OVER.
func TestDurableSubscription(t *testing.T) {
	k := newKafka(t)
	topic := k.topic("durable", 2)
	k.produce(topic, changes("d-", 0, 100, 25)...)
	g := startGateway(t, gatewayConfig{topics: []string{topic}})
	c := g.dial()
	waitReady(t, c)
	name := randomName("go-sub")
	// No periodic commit in the first run: what is committed at the end is the clean stop's.
	opts := tributary.FollowOptions{Topics: []string{topic}, SubscriptionName: name, CommitInterval: time.Hour}

	h := newStateHandler()
	first := &recordingStore{}
	opts.Store = first
	f := startFollow(c, opts, h)
	eventually(t, 30*time.Second, "the snapshot", func() bool { return first.snapshotPosition() != nil })
	k.produce(topic, changes("d-", 100, 50, 25)...)
	end := k.endOffsets(topic)
	reaches(t, first, end, f)
	if err := f.stop(t); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	committed := func() tributary.Position {
		info, err := c.Subscriptions.Describe(ctx, &pb.DescribeSubscriptionRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		p := tributary.Position{}
		for _, pp := range info.GetPartitions() {
			p[tributary.TopicPartition{Topic: pp.GetTopic(), Partition: pp.GetPartition()}] = pp.GetCommittedOffset()
		}
		return p
	}
	if got := committed(); !got.Equal(end) {
		t.Fatalf("committed %v after a clean stop, want the end %v", got, end)
	}

	// B restarts with its state (kept by the handler) but no stored position.
	k.produce(topic, changes("d-", 150, 50, 25)...)
	second := tributary.NewMemoryStore()
	opts.Store = second
	opts.CommitInterval = 100 * time.Millisecond
	f = startFollow(c, opts, h)
	k.produce(topic, changes("d-", 200, 50, 25)...)
	end = k.endOffsets(topic)
	reaches(t, second, end, f)
	// While it runs, the position is committed at most every CommitInterval.
	eventually(t, 10*time.Second, "the periodic commit of the end", func() bool { return committed().Equal(end) })
	if h.resetCount() != 1 {
		t.Errorf("%d resets: the second follow took a snapshot instead of resuming by name", h.resetCount())
	}
	checkExact(t, k, topic, h, first.snapshotPosition())

	// Another follower takes the name over: the first stops with the decoded ABORTED.
	other := startFollow(c, opts, newStateHandler())
	select {
	case err := <-f.done:
		if e, ok := tributary.AsError(err); !ok || e.Code != codes.Aborted || e.Reason != "SUBSCRIPTION_TAKEN_OVER" {
			t.Errorf("the follower taken over returned %v, want ABORTED SUBSCRIPTION_TAKEN_OVER", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the follower taken over did not stop")
	}
	if err := other.stop(t); err != nil {
		t.Error(err)
	}
}
