// Package tributary is the Go client of Tributary, the gRPC gateway that lets a system B follow
// the state of a system A through A's Kafka topics.
//
// Dial connects to a gateway and holds the generated stubs (package tributaryv1). Follow is the
// follow helper of clients/FOLLOW.md: it takes a snapshot, then subscribes from the snapshot's
// offsets, and keeps B's state exact across B's restarts, gateway restarts and Kafka retention,
// handing every change to a Handler and the position to a Store.
//
// Errors of the gateway carry a google.rpc.Status with details; AsError decodes them into *Error.
package tributary
