// Command kube-apiserver is the Kubernetes API server of k8s.io/kubernetes at the version pinned in this
// directory's go.mod, built from the module proxy for kubeenv (nothing of Kubernetes is committed). It does what
// k8s.io/kubernetes/cmd/kube-apiserver does: the same command, log format and metrics registrations.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
