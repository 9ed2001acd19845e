package quota

import (
	"context"
	"fmt"
	"time"
)

// maxWaitKey is the context key of WithMaxWait.
type maxWaitKey struct{}

// WithMaxWait returns a context under which Wait does not wait for a budget longer than d: when the windows
// (or a pause) leave no room for the call until later than now+d, Wait returns a *BusyError saying when there
// will be, and grants nothing. A caller that has other work to do (the relay, which sets the event aside)
// uses it instead of holding a worker on the budget. Waiting for the caller's turn among the process's other
// waiters of the key is not bounded by it.
func WithMaxWait(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, maxWaitKey{}, d)
}

// tooLong reports whether a call that may go ahead at at, seen at now, waits longer than ctx allows.
func tooLong(ctx context.Context, now, at time.Time) bool {
	d, ok := ctx.Value(maxWaitKey{}).(time.Duration)
	return ok && at.Sub(now) > d
}

// BusyError is Wait's answer under WithMaxWait when the key has no budget until Until.
type BusyError struct {
	Key   Key
	Until time.Time
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("quota: %s has no budget until %s", e.Key, e.Until.UTC().Format(time.RFC3339Nano))
}

// Retryable is true: the budget frees at Until.
func (e *BusyError) Retryable() bool { return true }

// BusyUntil says when the budget frees.
func (e *BusyError) BusyUntil() time.Time { return e.Until }
