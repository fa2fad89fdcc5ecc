// Package files is the machinery of goray's file store (the public SDK is
// package files at the module's top level): content-addressed files kept on
// the raylets' disks with N replicas on distinct nodes.
//
//   - Disk (disk.go) is one raylet's replicas under <data dir>/files;
//   - Server (server.go) serves a raylet's FileStoreService over its Disk:
//     puts, block reads, replication from a peer, deletion, and the
//     reconciliation of what is on disk with the head's index when the
//     raylet joins;
//   - Client (client.go) puts and reads files for drivers, the gateway and
//     the CLI; its reader checks every block (CRC-32C) and the whole content
//     (SHA-256, incrementally) and fails over to another
//     replica, resuming at the offset already verified.
//
// The head's index (hash → size, block checksums, replica nodes; name → hash)
// is scheduler's fileManager. See docs/storage.md.
package files
