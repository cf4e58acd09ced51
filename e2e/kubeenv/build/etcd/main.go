// Command etcd is etcd's own server, built from the module proxy at the version pinned in this directory's go.mod,
// for kubeenv's real API server (nothing of etcd is committed).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
