package tributary_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	tributary "github.com/tributary/tributary/clients/go"
	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// repoRoot is the repository's root (these tests run in clients/go).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func gatewayBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("TRIBUTARY_BIN")
	if bin == "" {
		bin = filepath.Join(repoRoot(t), "target", "debug", "tributary")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the gateway binary %s is missing (build it, or set TRIBUTARY_BIN): %v", bin, err)
	}
	return bin
}

func bootstrap() string {
	if b := os.Getenv("TRIBUTARY_TEST_BOOTSTRAP"); b != "" {
		return b
	}
	return "127.0.0.1:9092"
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// kafka is a test's Kafka: an admin client and a producer.
type kafka struct {
	t     testing.TB
	kc    *kgo.Client
	admin *kadm.Client
}

func newKafka(t testing.TB) *kafka {
	t.Helper()
	kc, err := kgo.NewClient(kgo.SeedBrokers(bootstrap()), kgo.ProducerLinger(0), kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	return &kafka{t: t, kc: kc, admin: kadm.NewClient(kc)}
}

// topic creates a topic with random name and the given partitions.
func (k *kafka) topic(prefix string, partitions int32) string {
	k.t.Helper()
	name := randomName("go-" + prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := k.admin.CreateTopic(ctx, partitions, 1, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		k.t.Fatalf("create topic %s: %v (is Kafka up at %s? scripts/kafka.sh start)", name, err, bootstrap())
	}
	k.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = k.admin.DeleteTopics(ctx, name)
	})
	return name
}

// produce writes records synchronously; a nil value is a tombstone.
func (k *kafka) produce(topic string, kvs ...[2]*string) {
	k.t.Helper()
	if err := k.produceE(topic, kvs...); err != nil {
		k.t.Fatalf("produce: %v", err)
	}
}

// produceE is produce for another goroutine than the test's.
func (k *kafka) produceE(topic string, kvs ...[2]*string) error {
	records := make([]*kgo.Record, len(kvs))
	for i, kv := range kvs {
		r := &kgo.Record{Topic: topic, Key: []byte(*kv[0])}
		if kv[1] != nil {
			r.Value = []byte(*kv[1])
		}
		records[i] = r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return k.kc.ProduceSync(ctx, records...).FirstErr()
}

// changes makes n records over keys prefix0..prefix(keys-1); every seventh is a tombstone.
func changes(prefix string, start, n, keys int) [][2]*string {
	out := make([][2]*string, 0, n)
	for i := start; i < start+n; i++ {
		key := fmt.Sprintf("%s%d", prefix, i%keys)
		if i%7 == 6 {
			out = append(out, tomb(key))
		} else {
			out = append(out, kv(key, fmt.Sprintf("v%d", i)))
		}
	}
	return out
}

func kv(key, value string) [2]*string { return [2]*string{&key, &value} }
func tomb(key string) [2]*string      { return [2]*string{&key, nil} }

// endOffsets returns the high watermarks of a topic.
func (k *kafka) endOffsets(topic string) tributary.Position {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offsets, err := k.admin.ListEndOffsets(ctx, topic)
	if err != nil {
		k.t.Fatal(err)
	}
	p := tributary.Position{}
	offsets.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			k.t.Fatal(o.Err)
		}
		p[tributary.TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
	})
	return p
}

// rawRecord is a record as Kafka holds it.
type rawRecord struct {
	partition int32
	offset    int64
	key       string
	value     []byte // nil: tombstone
}

// readAll reads every retained record of topic up to its current end, with a consumer that
// shares no code with the gateway.
func (k *kafka) readAll(topic string) []rawRecord {
	k.t.Helper()
	end := k.endOffsets(topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	starts, err := k.admin.ListStartOffsets(ctx, topic)
	if err != nil {
		k.t.Fatal(err)
	}
	remaining := 0
	partitions := map[int32]kgo.Offset{}
	for tp, e := range end {
		s, _ := starts.Lookup(topic, tp.Partition)
		remaining += int(e - s.Offset)
		partitions[tp.Partition] = kgo.NewOffset().At(s.Offset)
	}
	if remaining == 0 {
		return nil
	}
	c, err := kgo.NewClient(kgo.SeedBrokers(bootstrap()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: partitions}))
	if err != nil {
		k.t.Fatal(err)
	}
	defer c.Close()
	var out []rawRecord
	done := func() bool {
		next := map[int32]int64{}
		for _, r := range out {
			next[r.partition] = r.offset + 1
		}
		for tp, e := range end {
			if next[tp.Partition] < e {
				s, _ := starts.Lookup(topic, tp.Partition)
				if e > s.Offset {
					return false
				}
			}
		}
		return true
	}
	for !done() {
		fetches := c.PollFetches(ctx)
		if ctx.Err() != nil {
			k.t.Fatalf("reading %s back: %v", topic, ctx.Err())
		}
		fetches.EachError(func(_ string, _ int32, err error) { k.t.Fatalf("fetch: %v", err) })
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset < end[tributary.TopicPartition{Topic: topic, Partition: r.Partition}] {
				out = append(out, rawRecord{partition: r.Partition, offset: r.Offset, key: string(r.Key), value: r.Value})
			}
		})
	}
	return out
}

// rebuild is the state a raw consumer builds: the last value per key, tombstones removed.
func rebuild(records []rawRecord) map[string]string {
	state := map[string]string{}
	for _, r := range records {
		if r.value == nil {
			delete(state, r.key)
		} else {
			state[r.key] = string(r.value)
		}
	}
	return state
}

// gatewayConfig is what a test changes in the gateway's configuration.
type gatewayConfig struct {
	topics []string
	extra  string // more TOML, appended (sections)
	env    []string
}

// gateway is the real binary, started with a configuration file.
type gateway struct {
	t      testing.TB
	config string
	env    []string
	addr   string
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func quoteTOML(s string) string { return fmt.Sprintf("%q", s) }

func startGateway(t testing.TB, cfg gatewayConfig) *gateway {
	t.Helper()
	dir := t.TempDir()
	quoted := make([]string, len(cfg.topics))
	for i, topic := range cfg.topics {
		quoted[i] = quoteTOML(topic)
	}
	config := fmt.Sprintf(`listen = "127.0.0.1:0"

[kafka]
bootstrap_servers = %s
topics = [%s]
metadata_refresh_ms = 1000

[translators]
data_dir = %s

[limits]
progress_interval_ms = 200
%s
`, quoteTOML(bootstrap()), strings.Join(quoted, ", "), quoteTOML(filepath.Join(dir, "translators")), cfg.extra)
	path := filepath.Join(dir, "tributary.toml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, config: path, env: cfg.env, stderr: &lockedBuffer{}}
	t.Cleanup(func() {
		g.kill()
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.stderr.String())
		}
	})
	g.start()
	return g
}

// start runs the binary; after the first start, on the same address.
func (g *gateway) start() {
	g.t.Helper()
	args := []string{"serve", "--config", g.config}
	if g.addr != "" {
		args = append(args, "--listen", g.addr)
	}
	cmd := exec.Command(gatewayBinary(g.t), args...)
	cmd.Env = append(os.Environ(), g.env...)
	cmd.Stderr = g.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		g.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.cmd = cmd
	g.done = make(chan struct{})
	lines := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(stdout)
		first := true
		for scanner.Scan() {
			if first {
				lines <- scanner.Text()
				first = false
			}
		}
		close(lines)
	}()
	go func() {
		_ = cmd.Wait()
		close(g.done)
	}()
	select {
	case line, ok := <-lines:
		addr, found := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
		if !ok || !found {
			g.t.Fatalf("the gateway did not print its address (first line %q); log:\n%s", line, g.stderr.String())
		}
		if g.addr != "" && addr != g.addr {
			g.t.Fatalf("restarted on %s, not %s", addr, g.addr)
		}
		g.addr = addr
	case <-time.After(30 * time.Second):
		g.t.Fatalf("the gateway did not start in 30 s; log:\n%s", g.stderr.String())
	}
}

// stop sends SIGTERM and waits for the process to end.
func (g *gateway) stop() {
	g.t.Helper()
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(30 * time.Second):
		g.t.Fatalf("the gateway did not stop within 30 s of SIGTERM")
	}
	g.cmd = nil
}

func (g *gateway) kill() {
	if g.cmd == nil {
		return
	}
	_ = g.cmd.Process.Kill()
	<-g.done
	g.cmd = nil
}

// dial connects to the gateway in plaintext, with extra options.
func (g *gateway) dial(opts ...tributary.Option) *tributary.Client {
	g.t.Helper()
	if len(opts) == 0 {
		opts = []tributary.Option{tributary.WithInsecure()}
	}
	c, err := tributary.Dial(context.Background(), g.addr, opts...)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { _ = c.Close() })
	return c
}

// waitReady polls DescribeTopics until the view is ready.
func waitReady(t testing.TB, c *tributary.Client) {
	t.Helper()
	eventually(t, 60*time.Second, "the gateway to be ready", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := c.Gateway.DescribeTopics(ctx, &pb.DescribeTopicsRequest{})
		return err == nil && resp.GetReady()
	})
}

// eventually polls cond every 20 ms until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stateHandler is B: a map of key to value, with checks of the contract on every call.
type stateHandler struct {
	mu        sync.Mutex
	state     map[string]string
	resets    int
	snapshots int                                  // snapshot entries applied
	snapMax   map[tributary.TopicPartition]int64   // highest offset of a snapshot entry
	streamed  map[tributary.TopicPartition][]int64 // offsets of streamed records, in order
	position  tributary.Position                   // the last position Apply was given
	problems  []string
}

func newStateHandler() *stateHandler {
	h := &stateHandler{}
	h.clear()
	return h
}

func (h *stateHandler) clear() {
	h.state = map[string]string{}
	h.snapMax = map[tributary.TopicPartition]int64{}
	h.streamed = map[tributary.TopicPartition][]int64{}
	h.position = nil
}

func (h *stateHandler) Reset(context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resets++
	h.clear()
	return nil
}

func (h *stateHandler) Apply(_ context.Context, changes []tributary.Change, position tributary.Position) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range changes {
		tp := tributary.TopicPartition{Topic: c.Topic, Partition: c.Partition}
		if c.Snapshot {
			h.snapshots++
			if position != nil {
				h.problems = append(h.problems, "a snapshot chunk came with a position")
			}
			if prev, ok := h.snapMax[tp]; !ok || c.Offset > prev {
				h.snapMax[tp] = c.Offset
			}
		} else {
			offsets := h.streamed[tp]
			if n := len(offsets); n > 0 && c.Offset <= offsets[n-1] && c.OutputIndex == 0 {
				h.problems = append(h.problems, fmt.Sprintf("%v: record %d applied after %d", tp, c.Offset, offsets[n-1]))
			}
			if m, ok := h.snapMax[tp]; ok && c.Offset <= m {
				h.problems = append(h.problems, fmt.Sprintf("%v: record %d streamed after the snapshot held %d", tp, c.Offset, m))
			}
			if c.OutputIndex == 0 {
				h.streamed[tp] = append(offsets, c.Offset)
			}
			if position[tp] < c.Offset+1 {
				h.problems = append(h.problems, fmt.Sprintf("%v: record %d came with position %d", tp, c.Offset, position[tp]))
			}
		}
		if c.Tombstone() {
			delete(h.state, string(c.Key))
		} else {
			h.state[string(c.Key)] = string(c.Value)
		}
	}
	if position != nil {
		for tp, o := range h.position {
			if position[tp] < o {
				h.problems = append(h.problems, fmt.Sprintf("%v: position went back from %d to %d", tp, o, position[tp]))
			}
		}
		h.position = position.Clone()
	}
	return nil
}

// streamedOffsets returns the offsets of the records streamed to partition tp.
func (h *stateHandler) streamedOffsets(tp tributary.TopicPartition) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int64(nil), h.streamed[tp]...)
}

func (h *stateHandler) resetCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.resets
}

// recordingStore is a MemoryStore that remembers the position of the last snapshot: the first
// save after a clear.
type recordingStore struct {
	tributary.MemoryStore
	mu       sync.Mutex
	clears   int
	cleared  bool
	snapshot tributary.Position
}

func (s *recordingStore) Save(ctx context.Context, p tributary.Position) error {
	s.mu.Lock()
	if s.cleared {
		s.snapshot = p.Clone()
		s.cleared = false
	}
	s.mu.Unlock()
	return s.MemoryStore.Save(ctx, p)
}

func (s *recordingStore) Clear(ctx context.Context) error {
	s.mu.Lock()
	s.clears++
	s.cleared = true
	s.mu.Unlock()
	return s.MemoryStore.Clear(ctx)
}

func (s *recordingStore) snapshotPosition() tributary.Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot.Clone()
}

// checkState checks the handler's state against the rebuild from Kafka; returns the records read.
func checkState(t testing.TB, k *kafka, topic string, h *stateHandler) []rawRecord {
	t.Helper()
	records := k.readAll(topic)
	want := rebuild(records)
	got := h.snapshotState()
	if len(want) == 0 {
		t.Fatal("the test wrote nothing")
	}
	if !maps.Equal(got, want) {
		t.Errorf("state differs from the rebuild from Kafka: %d keys, want %d", len(got), len(want))
		for key, v := range want {
			if got[key] != v {
				t.Errorf("  key %q: got %q, want %q", key, got[key], v)
			}
		}
		for key := range got {
			if _, ok := want[key]; !ok {
				t.Errorf("  key %q: should be absent", key)
			}
		}
	}
	return records
}

// checkExact checks the contract against Kafka: the handler's state equals the rebuild from
// Kafka and every record after the snapshot's position was streamed exactly once, in order.
func checkExact(t testing.TB, k *kafka, topic string, h *stateHandler, from tributary.Position) {
	t.Helper()
	records := checkState(t, k, topic, h)
	expected := map[int32][]int64{}
	for _, r := range records {
		tp := tributary.TopicPartition{Topic: topic, Partition: r.partition}
		if o, ok := from[tp]; ok && r.offset >= o {
			expected[r.partition] = append(expected[r.partition], r.offset)
		}
	}
	for tp := range from {
		got := h.streamedOffsets(tp)
		if !slices.Equal(got, expected[tp.Partition]) {
			t.Errorf("%v: streamed offsets %v, want %v (every record from %d, once)", tp, got, expected[tp.Partition], from[tp])
		}
	}
	h.check(t)
}

func (h *stateHandler) snapshotState() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]string, len(h.state))
	for k, v := range h.state {
		out[k] = v
	}
	return out
}

func (h *stateHandler) check(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.problems {
		t.Error(p)
	}
}

// follower runs Follow in the background.
type follower struct {
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	errors []error // OnError
}

func startFollow(c *tributary.Client, opts tributary.FollowOptions, h tributary.Handler) *follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{cancel: cancel, done: make(chan error, 1)}
	opts.OnError = func(err error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.errors = append(f.errors, err)
	}
	go func() { f.done <- tributary.Follow(ctx, c, opts, h) }()
	return f
}

// stop cancels the follow and returns what Follow returned.
func (f *follower) stop(t testing.TB) error {
	t.Helper()
	f.cancel()
	select {
	case err := <-f.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Follow did not return within 30 s of the cancel")
		return nil
	}
}

func (f *follower) reported() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]error(nil), f.errors...)
}

// reaches waits until the store's position reaches end on every partition.
func reaches(t testing.TB, store tributary.Store, end tributary.Position, f *follower) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("the follower to reach %v", end), func() bool {
		select {
		case err := <-f.done:
			t.Fatalf("Follow returned early: %v", err)
		default:
		}
		p, err := store.Load(context.Background())
		if err != nil || p == nil {
			return false
		}
		for tp, o := range end {
			if p[tp] < o {
				return false
			}
		}
		return true
	})
}
