// Command kube-env runs kubeenv's etcd and kube-apiserver from the shell and for the main module's e2e tests, which
// must not import Kubernetes' server code.
//
//	kube-env            start, print the kubeconfig's path on stdout, run until Ctrl-C (make kube-env)
//	kube-env -warm      build the missing binaries into the cache (make kube-warm)
//	kube-env -cached    exit 0 when every binary is cached, 1 when not
//	kube-env -control   start, print the environment as one JSON line, then obey commands on stdin, one a line:
//	                    stop-apiserver, start-apiserver, stop-etcd, start-etcd (answered "ok" or "error: "),
//	                    compact-etcd (see Env.CompactEtcd), apiserver-pid (answered with the process ID);
//	                    the end of stdin stops everything
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/kedge-proxy/kedge/e2e/kubeenv"
)

func main() {
	os.Exit(run())
}

func run() int {
	warm := flag.Bool("warm", false, "build the missing binaries into the cache and print their paths")
	cached := flag.Bool("cached", false, "exit 0 when every binary is cached, 1 when not")
	control := flag.Bool("control", false, "print the environment as JSON and take commands on stdin")
	names := flag.String("server_names", "", "comma-separated extra DNS names for the API server's certificate")
	keep := flag.Bool("keep_dir", false, "keep the environment's directory (logs, keys) after it stops")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "kube-env: unexpected argument %q\n", flag.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch {
	case *cached:
		ok, err := kubeenv.Cached()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if !ok {
			fmt.Fprintln(os.Stderr, "kube-env: not cached; run make kube-warm")
			return 1
		}
		return 0
	case *warm:
		paths, err := kubeenv.Warm(ctx, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for _, n := range []string{"etcd", "kube-apiserver"} {
			fmt.Println(paths[n])
		}
		return 0
	}

	opts := kubeenv.Options{Log: os.Stderr, KeepDir: *keep}
	if *names != "" {
		opts.ServerNames = strings.Split(*names, ",")
	}
	env, err := kubeenv.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	if *control {
		return serveControl(ctx, env, os.Stdin, os.Stdout)
	}
	fmt.Println(env.Kubeconfig)
	fmt.Fprintf(os.Stderr, "kube-apiserver %s and etcd %s at %s (directory %s)\nexport KUBECONFIG=%s\nCtrl-C stops both.\n",
		env.Versions["kube-apiserver"], env.Versions["etcd"], env.URL, env.Dir, env.Kubeconfig)
	<-ctx.Done()
	return 0
}

// controlInfo is the JSON line -control prints. The token is the test cluster's admin token: the line goes to the
// test that started kube-env through a pipe, never to a log.
type controlInfo struct {
	Kubeconfig   string            `json:"kubeconfig"`
	URL          string            `json:"url"`
	Token        string            `json:"token"`
	CAFile       string            `json:"ca_file"`
	EtcdURL      string            `json:"etcd_url"`
	AuditLog     string            `json:"audit_log"`
	Dir          string            `json:"dir"`
	APIServerPID int               `json:"apiserver_pid"`
	Versions     map[string]string `json:"versions"`
}

func serveControl(ctx context.Context, env *kubeenv.Env, in io.Reader, out io.Writer) int {
	info := controlInfo{Kubeconfig: env.Kubeconfig, URL: env.URL, Token: env.Token, CAFile: env.CAFile,
		EtcdURL: env.EtcdURL, AuditLog: env.AuditLog, Dir: env.Dir, APIServerPID: env.APIServerPID(), Versions: env.Versions}
	if err := json.NewEncoder(out).Encode(info); err != nil {
		return 1
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
	}()
	for {
		var line string
		var ok bool
		select {
		case <-ctx.Done():
			return 0
		case line, ok = <-lines:
			if !ok {
				return 0
			}
		}
		var err error
		switch line {
		case "":
			continue
		case "stop-apiserver":
			err = env.StopAPIServer()
		case "start-apiserver":
			err = env.StartAPIServer(ctx)
		case "stop-etcd":
			err = env.StopEtcd()
		case "start-etcd":
			err = env.StartEtcd(ctx)
		case "compact-etcd":
			_, err = env.CompactEtcd(ctx)
		case "apiserver-pid":
			fmt.Fprintln(out, env.APIServerPID())
			continue
		default:
			err = fmt.Errorf("unknown command %q", line)
		}
		if err != nil {
			fmt.Fprintf(out, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " | "))
		} else {
			fmt.Fprintln(out, "ok")
		}
	}
}
