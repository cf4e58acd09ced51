//go:build kube

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// The tests of this build tag (make e2e-kube) run kedge and winch against a real etcd and kube-apiserver, started
// by e2e/kubeenv's kube-env tool: a module of its own, so the main module does not import Kubernetes' server code.

// realKube is one running control plane, as kube-env -control describes it.
type realKube struct {
	Kubeconfig   string            `json:"kubeconfig"`
	URL          string            `json:"url"`
	Token        string            `json:"token"`
	CAFile       string            `json:"ca_file"`
	AuditLog     string            `json:"audit_log"`
	Dir          string            `json:"dir"`
	APIServerPID int               `json:"apiserver_pid"`
	Versions     map[string]string `json:"versions"`

	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan string // kube-env's stdout after the JSON line, one reply a line
	stderr  *testutil.Buffer
}

var kubeEnvTool struct {
	once sync.Once
	path string
	err  error
}

// kubeEnvBinary builds kube-env once per test run and fails the test unless etcd and kube-apiserver are cached
// (make e2e-kube runs make kube-warm first; a cold kube-apiserver build takes 8-27 minutes).
func kubeEnvBinary(t *testing.T) string {
	t.Helper()
	kubeEnvTool.once.Do(func() {
		path := filepath.Join(binDir, "kube-env")
		cmd := exec.Command("go", "build", "-o", path, "./cmd/kube-env")
		cmd.Dir = "kubeenv"
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			kubeEnvTool.err = fmt.Errorf("building kube-env: %v\n%s", err, out)
			return
		}
		if out, err := exec.Command(path, "-cached").CombinedOutput(); err != nil {
			kubeEnvTool.err = fmt.Errorf("kube-env -cached: %v: %s", err, out)
			return
		}
		kubeEnvTool.path = path
	})
	if kubeEnvTool.err != nil {
		t.Fatal(kubeEnvTool.err)
	}
	return kubeEnvTool.path
}

// startRealKube starts etcd and kube-apiserver; serverNames are extra names for the API server's certificate. At
// cleanup kube-env stops both (SIGKILL after 2 s for kube-apiserver); on failure the API server's log is printed.
func startRealKube(t *testing.T, serverNames ...string) *realKube {
	t.Helper()
	k := &realKube{replies: make(chan string, 16), stderr: &testutil.Buffer{}}
	k.cmd = exec.Command(kubeEnvBinary(t), "-control", "-keep_dir", "-server_names="+strings.Join(serverNames, ","))
	k.cmd.Stderr = k.stderr
	var err error
	if k.stdin, err = k.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := k.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		defer close(k.replies)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			k.replies <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if t.Failed() && k.Dir != "" {
			log, _ := os.ReadFile(filepath.Join(k.Dir, "kube-apiserver.log"))
			if len(log) > 20000 {
				log = log[len(log)-20000:]
			}
			t.Logf("---- kube-apiserver log (end) ----\n%s---- kube-env ----\n%s", log, k.stderr.String())
		}
		k.stdin.Close() // kube-env stops both servers at the end of its input
		go func() { _ = k.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = k.cmd.Process.Kill()
			t.Errorf("kube-env did not stop within 30 s")
		}
		if k.Dir != "" && t.Failed() {
			t.Logf("the control plane's directory (logs, audit log) is kept: %s", k.Dir)
		} else if k.Dir != "" {
			os.RemoveAll(k.Dir)
		}
	})
	select {
	case line, ok := <-k.replies:
		if !ok {
			t.Fatalf("kube-env ended before the control plane was ready:\n%s", k.stderr.String())
		}
		if err := json.Unmarshal([]byte(line), k); err != nil {
			t.Fatalf("kube-env: %v: %q", err, line)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("the control plane was not ready within 3 minutes:\n%s", k.stderr.String())
	}
	t.Logf("kube-apiserver %s, etcd %s at %s", k.Versions["kube-apiserver"], k.Versions["etcd"], k.URL)
	return k
}

// do sends kube-env a command (stop-apiserver, start-apiserver, stop-etcd, start-etcd) and waits for its "ok".
func (k *realKube) do(t *testing.T, command string) {
	t.Helper()
	if _, err := fmt.Fprintln(k.stdin, command); err != nil {
		t.Fatalf("kube-env %s: %v", command, err)
	}
	select {
	case reply := <-k.replies:
		if reply != "ok" {
			t.Fatalf("kube-env %s: %s", command, reply)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("kube-env %s: no answer within 3 minutes", command)
	}
}

// kubectl runs the real kubectl as the admin, directly (no proxy), and returns stdout and stderr apart.
func (k *realKube) kubectl(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, lookClient(t, "kubectl"),
		append([]string{"--kubeconfig", k.Kubeconfig, "--cache-dir", filepath.Join(home, "cache"), "--request-timeout=30s"}, args...)...)
	cmd.Env = clientEnv("HOME=" + home)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// mustKubectl is kubectl that fails the test on an error.
func (k *realKube) mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := k.kubectl(t, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// client is a client-go clientset for kubeconfig, with limits high enough for the scale test.
func kubeClient(t *testing.T, kubeconfig string) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tokenKubeconfig writes a kubeconfig for server, trusting caFile, with token as the user's bearer token.
func tokenKubeconfig(t *testing.T, server, caFile, token string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: %q, certificate-authority: %q}
users:
- name: u
  user: {token: %q}
contexts:
- name: c
  context: {cluster: c, user: u}
current-context: c
`, server, caFile, token))
}

// auditEvent is the part of an audit.k8s.io/v1 Event the tests read.
type auditEvent struct {
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef struct {
		Resource string `json:"resource"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	Stage                    string    `json:"stage"`
	RequestReceivedTimestamp time.Time `json:"requestReceivedTimestamp"`
}

// auditEvents reads the API server's audit log (every request of a service account, see e2e/kubeenv).
func (k *realKube) auditEvents(t *testing.T) []auditEvent {
	t.Helper()
	b, err := os.ReadFile(k.AuditLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var evs []auditEvent
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		var ev auditEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit log: %v: %q", err, line)
		}
		evs = append(evs, ev)
	}
	return evs
}
