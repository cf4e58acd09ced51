package discovery

import (
	"context"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// Event fields of the Events raised on Services that discovery skips.
const (
	eventReason    = "KedgeDiscoveryFailed"
	eventComponent = "kedge"
	eventTimeout   = 5 * time.Second
	maxEventLength = 1024
)

// eventReporter raises Warning Events on Services. Its methods are called by one goroutine (the Discoverer's).
type eventReporter struct {
	client   kubernetes.Interface
	log      logging.Logger
	disabled bool // RBAC refused an Event once: logs are the only report from then on
}

// warn raises a Warning Event with msg on svc, best effort: a failure is logged, and a refusal by RBAC stops
// further attempts.
func (e *eventReporter) warn(ctx context.Context, svc *corev1.Service, msg string) {
	if e.disabled {
		return
	}
	if len(msg) > maxEventLength {
		msg = msg[:maxEventLength-3] + "..."
	}
	now := metav1.NewTime(time.Now())
	host, _ := os.Hostname()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", svc.Name, now.UnixNano()),
			Namespace: svc.Namespace,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind:            "Service",
			APIVersion:      "v1",
			Namespace:       svc.Namespace,
			Name:            svc.Name,
			UID:             svc.UID,
			ResourceVersion: svc.ResourceVersion,
		},
		Reason:         eventReason,
		Message:        msg,
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: eventComponent, Host: host},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	_, err := e.client.CoreV1().Events(svc.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	switch {
	case err == nil:
	case apierrors.IsForbidden(err):
		e.disabled = true
		e.log.Info("kedge may not create Events (RBAC); problems with Services are reported in the logs only", logging.FieldError, err)
	default:
		e.log.Debug("raising an Event on a Service", "service", svc.Namespace+"/"+svc.Name, logging.FieldError, err)
	}
}
