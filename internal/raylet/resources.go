package raylet

import (
	"github.com/goray/goray/internal/errs"
	"github.com/goray/goray/internal/sched"
	pb "github.com/goray/goray/proto/goray/v1"
)

// parseResources reads and checks a request's resources.
func parseResources(p *pb.Resources) (sched.Resources, error) {
	m := p.GetAmounts()
	if len(m) > maxResourceNames {
		return nil, errs.New(errs.KindInvalidArgument, "", "%d resources requested, at most %d allowed", len(m), maxResourceNames)
	}
	out := make(sched.Resources, len(m))
	for k, v := range m {
		if err := checkResource(k, v); err != nil {
			return nil, errs.New(errs.KindInvalidArgument, "", "%v", err)
		}
		if v > 0 {
			out[k] = v
		}
	}
	return out, nil
}

var errStopping = errs.New(errs.KindNodeDied, "", "the raylet is shutting down")

// lacks is the first resource of need that have has too little of (need
// does not fit in have).
func lacks(need, have sched.Resources) sched.Shortfall {
	s, _ := need.Lacks(have)
	return s
}
