package core

import "github.com/goray/goray/internal/ids"

// Endpoints are what a client of the cluster's other services (the file
// store) dials: the head's and the local raylet's addresses, the cluster
// token and the local node.
func (c *Core) Endpoints() (head, raylet, token string, node ids.NodeID) {
	return c.headAddr, c.raylet, c.token, c.nodeID
}
