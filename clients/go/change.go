package tributary

import (
	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// Header is a Kafka record header. A nil Value is a null header (not the same as an empty one).
type Header struct {
	Key   string
	Value []byte
}

// Change is one snapshot entry or one streamed record.
type Change struct {
	Topic     string
	Partition int32
	// Offset of A's record (for a snapshot entry: of the record that set the value).
	Offset int64
	// Milliseconds since the Unix epoch, -1 when unknown.
	TimestampMs int64
	// Nil for a keyless record (not the same as an empty key).
	Key []byte
	// Nil for a tombstone: delete the key.
	Value   []byte
	Headers []Header
	// With a translator: which output of the source record this is.
	OutputIndex uint32
	// True for the entries of a snapshot.
	Snapshot bool
}

// Tombstone reports whether the change deletes its key.
func (c *Change) Tombstone() bool { return c.Value == nil }

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func headers(hs []*pb.Header) []Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]Header, len(hs))
	for i, h := range hs {
		out[i] = Header{Key: h.GetKey(), Value: h.Value}
	}
	return out
}

// changeFromEntry converts a snapshot entry. Snapshot entries are never tombstones and their key
// and value are plain bytes, so an empty one is made non-nil.
func changeFromEntry(e *pb.SnapshotEntry) Change {
	return Change{
		Topic:       e.GetTopic(),
		Partition:   e.GetPartition(),
		Offset:      e.GetOffset(),
		TimestampMs: e.GetTimestampMs(),
		Key:         nonNil(e.GetKey()),
		Value:       nonNil(e.GetValue()),
		Headers:     headers(e.GetHeaders()),
		OutputIndex: e.GetOutputIndex(),
		Snapshot:    true,
	}
}

// changeFromRecord converts a streamed record; key and value keep their presence.
func changeFromRecord(r *pb.Record) Change {
	return Change{
		Topic:       r.GetTopic(),
		Partition:   r.GetPartition(),
		Offset:      r.GetOffset(),
		TimestampMs: r.GetTimestampMs(),
		Key:         r.Key,
		Value:       r.Value,
		Headers:     headers(r.GetHeaders()),
		OutputIndex: r.GetOutputIndex(),
	}
}
