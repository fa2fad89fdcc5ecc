package coord

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/goray/goray/internal/errs"
)

// Convert turns an error of the raw etcd client into goray's taxonomy
// (runtime.ErrX, tested with errors.Is); what names the operation.
// Errors already in the taxonomy, and nil, pass unchanged.
func Convert(err error, what string) error { return convert(err, what) }

func convert(err error, what string) error {
	if err == nil || errors.As(err, new(*errs.Error)) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errs.New(errs.KindTimeout, "", "%s: the context's deadline passed before etcd answered (%v)", what, err)
	}
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return errs.New(errs.KindCompacted, "", "%s: the revision asked for was compacted: read the current value and watch from its revision", what)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return errs.New(errs.KindInvalidArgument, "", "%s: the revision asked for is in the future (etcd has not reached it)", what)
	case errors.Is(err, rpctypes.ErrAuthFailed):
		return errs.New(errs.KindUnauthenticated, "", "%s: etcd rejected the user name or password: use the cluster's credentials (`goray kv creds`, or the .etcd file beside the head's token file)", what)
	case errors.Is(err, rpctypes.ErrInvalidAuthToken), errors.Is(err, rpctypes.ErrUserEmpty):
		return errs.New(errs.KindUnauthenticated, "", "%s: etcd requires authentication: connect with the cluster's credentials (`goray kv creds`)", what)
	case errors.Is(err, rpctypes.ErrPermissionDenied):
		return errs.New(errs.KindPermissionDenied, "", "%s: this etcd user may not do that (the read-only user cannot write): connect with the read-write credentials", what)
	case errors.Is(err, rpctypes.ErrRequestTooLarge):
		return errs.New(errs.KindInvalidArgument, "", "%s: the request is over etcd's size limit: store large data as a goray object or file and keep its ID here", what)
	case errors.Is(err, rpctypes.ErrTooManyOps):
		return errs.New(errs.KindInvalidArgument, "", "%s: the transaction has more operations than etcd allows (128 by default): split it", what)
	case errors.Is(err, rpctypes.ErrDuplicateKey):
		return errs.New(errs.KindInvalidArgument, "", "%s: a transaction may write a key only once", what)
	case errors.Is(err, rpctypes.ErrEmptyKey):
		return errs.New(errs.KindInvalidArgument, "", "%s: empty key: etcd keys are 1 byte or more", what)
	case errors.Is(err, rpctypes.ErrLeaseNotFound), errors.Is(err, concurrency.ErrSessionExpired):
		return errs.New(errs.KindSessionLost, "", "%s: the session's lease expired or was revoked (its process stopped keeping it alive for longer than its TTL), so its keys, locks and leadership are gone: start a new session", what)
	case errors.Is(err, rpctypes.ErrNoSpace):
		return errs.New(errs.KindInvalidArgument, "", "%s: etcd's database is full (its quota): delete keys and compact, or raise the quota", what)
	case errors.Is(err, concurrency.ErrElectionNoLeader):
		return errs.New(errs.KindNotFound, "", "%s: the election has no leader", what)
	case errors.Is(err, concurrency.ErrElectionNotLeader):
		return errs.New(errs.KindSessionLost, "", "%s: this session is not the leader (any more)", what)
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable:
			return errs.New(errs.KindUnavailable, "", "%s: etcd could not be reached (%s); the call may succeed later", what, st.Message())
		case codes.DeadlineExceeded:
			return errs.New(errs.KindTimeout, "", "%s: %s", what, st.Message())
		case codes.Canceled:
			return context.Canceled
		}
		var e *errs.Error
		if ge := errs.FromStatus(err); errors.As(ge, &e) {
			e.Message = what + ": " + e.Message
			return e
		}
	}
	return errs.New(errs.KindInternal, "", "%s: %v", what, err)
}
