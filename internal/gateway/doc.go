// Package gateway implements goray.v1.ClientService, the public API for
// clients in other languages (clients/python, clients/node). The head serves
// it (cmd/raylet wires it into `raylet --head` through raylet.HeadService).
//
// For each namespace that has a deployed job binary (`goray deploy`), the
// gateway holds a core worker attached to that deployment's job
// (core.Attach): it owns every object a client puts and the result of every
// call a client makes, submits the namespace's tasks by name to workers that
// raylets start from the deployed binary, and calls named actors directly on
// their workers. Clients hold refs as (namespace, object ID) pairs.
//
// Payloads cross as {encoding, data}: raw, protobuf, msgpack or JSON; the
// gateway checks that a value is well formed for its encoding and the worker
// decodes it into the Go type the function or method declares. Values larger
// than one gRPC message travel in chunks (Put and Get are streams).
package gateway
