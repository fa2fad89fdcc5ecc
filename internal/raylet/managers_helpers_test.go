package raylet

import "github.com/goray/goray/internal/ids"

// holdsActor says the lease manager still books resources for actor id.
func (m *leaseManager) holdsActor(id ids.ActorID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.actors[id] != nil
}
