package kubeenv

import "syscall"

// sysProcAttr kills the servers when the process that started them dies without calling Stop (a test binary
// killed by its timeout), so that no etcd or kube-apiserver outlives its test.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
