package tributary

import (
	"maps"
	"slices"
	"strings"

	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Position is, for every partition, the next offset to apply: what SubscribeRequest.from_offsets
// and SnapshotChunk.offsets carry. A nil Position means "no position".
type Position map[TopicPartition]int64

// Clone returns a copy of p (nil for nil).
func (p Position) Clone() Position {
	if p == nil {
		return nil
	}
	return maps.Clone(p)
}

// Merge returns a copy of p with every offset of other set (other's offsets win).
func (p Position) Merge(other Position) Position {
	out := make(Position, len(p)+len(other))
	maps.Copy(out, p)
	maps.Copy(out, other)
	return out
}

// Equal reports whether p and other hold the same offsets.
func (p Position) Equal(other Position) bool {
	return maps.Equal(p, other)
}

// Partitions returns p's partitions sorted by topic, then partition.
func (p Position) Partitions() []TopicPartition {
	keys := slices.Collect(maps.Keys(p))
	slices.SortFunc(keys, func(a, b TopicPartition) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition) - int(b.Partition)
	})
	return keys
}

// Proto returns p as PartitionOffset messages, sorted by topic and partition.
func (p Position) Proto() []*pb.PartitionOffset {
	out := make([]*pb.PartitionOffset, 0, len(p))
	for _, tp := range p.Partitions() {
		out = append(out, &pb.PartitionOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: p[tp]})
	}
	return out
}

// PositionFromProto makes a Position of PartitionOffset messages (never nil).
func PositionFromProto(offsets []*pb.PartitionOffset) Position {
	p := make(Position, len(offsets))
	for _, o := range offsets {
		p[TopicPartition{Topic: o.GetTopic(), Partition: o.GetPartition()}] = o.GetOffset()
	}
	return p
}

// advance returns the position after a batch of records: p with, for each record,
// its partition's next offset set to the record's offset + 1.
func (p Position) advance(records []*pb.Record) Position {
	next := p.Merge(nil)
	for _, r := range records {
		next[TopicPartition{Topic: r.GetTopic(), Partition: r.GetPartition()}] = r.GetOffset() + 1
	}
	return next
}
