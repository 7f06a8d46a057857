package tributary

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/tributary/tributary/clients/go/tributaryv1"
)

// OffsetsKind says what the offsets of an error are (tributary.v1.OffsetsDetail.Kind).
type OffsetsKind int

const (
	// OffsetsNone: the error carries no offsets.
	OffsetsNone OffsetsKind = iota
	// OffsetsEarliest: the earliest offsets Kafka still retains (with OUT_OF_RANGE, OFFSET_TOO_OLD).
	OffsetsEarliest
	// OffsetsResume: where an ended stream stands; subscribe from these to go on with no gap.
	OffsetsResume
	// OffsetsLatest: the latest offsets (with OUT_OF_RANGE, OFFSET_BEYOND_END).
	OffsetsLatest
)

func (k OffsetsKind) String() string {
	switch k {
	case OffsetsNone:
		return "NONE"
	case OffsetsEarliest:
		return "EARLIEST"
	case OffsetsResume:
		return "RESUME"
	case OffsetsLatest:
		return "LATEST"
	}
	return fmt.Sprintf("OffsetsKind(%d)", int(k))
}

// FieldViolation names a request field at fault (google.rpc.BadRequest).
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a gateway error decoded from its google.rpc.Status (the grpc-status-details-bin
// trailer). Use AsError or errors.As to get one from any error a call returned.
type Error struct {
	Code    codes.Code
	Message string
	// From google.rpc.ErrorInfo: a stable machine-readable reason such as "OFFSET_TOO_OLD",
	// its domain ("tributary.v1") and facts about the error.
	Reason   string
	Domain   string
	Metadata map[string]string
	// From google.rpc.BadRequest.
	FieldViolations []FieldViolation
	// From tributary.v1.OffsetsDetail (OffsetsNone and nil when absent).
	OffsetsKind OffsetsKind
	Offsets     Position

	status *status.Status
}

// Error formats the code, the reason and the message.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "tributary: %s", e.Code)
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

// GRPCStatus returns the status the error was decoded from, so status.FromError and
// status.Code work on an *Error too.
func (e *Error) GRPCStatus() *status.Status {
	if e.status == nil {
		return status.New(e.Code, e.Message)
	}
	return e.status
}

// Is makes errors.Is(err, target) true when target is an *Error with the same code and, if set,
// the same reason: errors.Is(err, &tributary.Error{Code: codes.OutOfRange}).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Code == e.Code && (t.Reason == "" || t.Reason == e.Reason)
}

// AsError returns err as an *Error: the one err wraps, or one decoded from the gRPC status err
// carries. It returns false for errors without a gRPC status (a context's, a handler's).
func AsError(err error) (*Error, bool) {
	if err == nil {
		return nil, false
	}
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil, false
	}
	s := se.GRPCStatus()
	if s == nil || s.Code() == codes.OK {
		return nil, false
	}
	return FromStatus(s), true
}

// FromStatus decodes a gRPC status and its details. Unknown details are ignored.
func FromStatus(s *status.Status) *Error {
	e := &Error{Code: s.Code(), Message: s.Message(), status: s}
	for _, detail := range s.Proto().GetDetails() {
		switch detail.MessageName() {
		case "google.rpc.ErrorInfo":
			var info errdetails.ErrorInfo
			if detail.UnmarshalTo(&info) == nil {
				e.Reason = info.GetReason()
				e.Domain = info.GetDomain()
				e.Metadata = maps.Clone(info.GetMetadata())
			}
		case "google.rpc.BadRequest":
			var bad errdetails.BadRequest
			if detail.UnmarshalTo(&bad) == nil {
				for _, v := range bad.GetFieldViolations() {
					e.FieldViolations = append(e.FieldViolations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
				}
			}
		case "tributary.v1.OffsetsDetail":
			var od pb.OffsetsDetail
			if detail.UnmarshalTo(&od) == nil {
				switch od.GetKind() {
				case pb.OffsetsDetail_EARLIEST:
					e.OffsetsKind = OffsetsEarliest
				case pb.OffsetsDetail_RESUME:
					e.OffsetsKind = OffsetsResume
				case pb.OffsetsDetail_LATEST:
					e.OffsetsKind = OffsetsLatest
				default:
					e.OffsetsKind = OffsetsNone
				}
				e.Offsets = PositionFromProto(od.GetOffsets())
			}
		}
	}
	return e
}

// asError converts any error of a gRPC call into an *Error (a status-less error becomes
// codes.Unknown, a context's error Canceled or DeadlineExceeded).
func asError(err error) *Error {
	if e, ok := AsError(err); ok {
		return e
	}
	return FromStatus(status.FromContextError(err))
}
