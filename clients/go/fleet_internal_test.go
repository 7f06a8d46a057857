package tributary

import (
	"maps"
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

func set(tps ...TopicPartition) partitionSet {
	out := partitionSet{}
	for _, x := range tps {
		out[x] = struct{}{}
	}
	return out
}

func TestFleetByOwner(t *testing.T) {
	owner := func(topic string, partition int32, address string, moving bool) *pb.PartitionOwner {
		return &pb.PartitionOwner{Topic: topic, Partition: partition, Owner: address, Moving: moving}
	}
	topology := &pb.GetTopologyResponse{Sharded: true, Partitions: []*pb.PartitionOwner{
		owner("t", 0, "a:1", false),
		owner("t", 1, "b:1", false),
		owner("t", 2, "a:1", false),
		owner("t", 3, "", true),
		owner("u", 0, "b:1", false),
	}}
	owners, unowned := byOwner(topology, set(tp("t", 0), tp("t", 1), tp("t", 2), tp("t", 3), tp("t", 9)))
	if len(owners) != 2 || !maps.Equal(owners["a:1"], set(tp("t", 0), tp("t", 2))) || !maps.Equal(owners["b:1"], set(tp("t", 1))) {
		t.Errorf("owners %v: want a:1 {t/0 t/2}, b:1 {t/1} (only the partitions asked for)", owners)
	}
	if !maps.Equal(unowned, set(tp("t", 3), tp("t", 9))) {
		t.Errorf("unowned %v: want the moving one and the one unknown to the topology", unowned)
	}
	if all := topologyPartitions(topology); len(all) != 5 {
		t.Errorf("topology partitions %v", all)
	}
}

func TestFleetMergeDisjoint(t *testing.T) {
	merged := Position{}
	if _, ok := mergeDisjoint(merged, Position{tp("t", 0): 10, tp("t", 2): 30}); !ok {
		t.Fatal("refused a first owner")
	}
	if _, ok := mergeDisjoint(merged, Position{tp("t", 1): 20}); !ok {
		t.Fatal("refused a disjoint owner")
	}
	if !merged.Equal(Position{tp("t", 0): 10, tp("t", 1): 20, tp("t", 2): 30}) {
		t.Errorf("merged %v", merged)
	}
	// A partition two owners served (it moved between their snapshots) is refused, untouched.
	got, ok := mergeDisjoint(merged, Position{tp("t", 3): 1, tp("t", 1): 25})
	if ok || got != tp("t", 1) {
		t.Errorf("merging a partition twice: %v %v, want t/1 refused", got, ok)
	}
	if merged[tp("t", 1)] != 20 || len(merged) != 3 {
		t.Errorf("a refused merge changed the position: %v", merged)
	}
}

func TestFleetMoved(t *testing.T) {
	if !moved(&Error{Code: codes.FailedPrecondition, Reason: "PARTITION_NOT_HELD"}) {
		t.Error("PARTITION_NOT_HELD is followed to the owner")
	}
	if moved(&Error{Code: codes.FailedPrecondition, Reason: "NO_COMMITTED_POSITION"}) || moved(nil) {
		t.Error("other refusals are not a move")
	}
	// PARTITION_MOVING is UNAVAILABLE: retried by the classification every follow shares.
	if retry, _ := classify(&Error{Code: codes.Unavailable, Reason: "PARTITION_MOVING"}); !retry {
		t.Error("PARTITION_MOVING is retried")
	}
}
