package tributary

import (
	"math/rand/v2"
	"time"
)

// backoff is a jittered exponential backoff ("full jitter"): the n-th wait is uniform in
// [0, min(max, initial * multiplier^n)].
type backoff struct {
	initial, max time.Duration
	multiplier   float64
	attempt      int
	random       func(n int64) int64 // uniform in [0, n)
}

func newBackoff(initial, max time.Duration) *backoff {
	return &backoff{initial: initial, max: max, multiplier: 2, random: rand.Int64N}
}

// ceiling is the upper bound of the next wait.
func (b *backoff) ceiling() time.Duration {
	c := float64(b.initial)
	for i := 0; i < b.attempt && c < float64(b.max); i++ {
		c *= b.multiplier
	}
	return min(time.Duration(c), b.max)
}

// next returns the next wait and moves one step up.
func (b *backoff) next() time.Duration {
	c := b.ceiling()
	b.attempt++
	if c <= 0 {
		return 0
	}
	return time.Duration(b.random(int64(c) + 1))
}

// reset goes back to the initial wait (a message has arrived).
func (b *backoff) reset() { b.attempt = 0 }
