package tributary_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	tributary "github.com/tributary/tributary/clients/go"
)

// state is B's state: the last value of every key of A's topic.
type state map[string][]byte

func (s state) Reset(context.Context) error { clear(s); return nil }

func (s state) Apply(_ context.Context, changes []tributary.Change, _ tributary.Position) error {
	for _, c := range changes {
		if c.Tombstone() {
			delete(s, string(c.Key))
		} else {
			s[string(c.Key)] = c.Value
		}
	}
	return nil
}

// Follows a topic into a map until Ctrl-C. The state is in memory, so is the position (the
// default store): a restart begins with a new snapshot.
func ExampleFollow() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	client, err := tributary.Dial(ctx, "127.0.0.1:50051", tributary.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	err = tributary.Follow(ctx, client, tributary.FollowOptions{Topics: []string{"media-assignments"}}, state{})
	if e, ok := tributary.AsError(err); ok {
		log.Fatalf("%v (reason %s)", e, e.Reason)
	}
}
