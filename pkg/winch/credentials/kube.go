package credentials

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/winch/config"

	// The oidc auth-provider registers itself with client-go's rest package; kubeconfig users that log in with
	// "auth-provider: {name: oidc}" need it.
	_ "k8s.io/client-go/plugin/pkg/client/auth/oidc"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// kubeContext is the name of the synthetic context (and, where needed, cluster) built for the user.
const kubeContext = "winch-credentials"

// placeholderServer stands in for the cluster of a user that no context with an https server uses: client-go reads
// user credentials only for TLS clusters, and the request built from it is never sent.
const placeholderServer = "https://kubernetes.invalid"

// kubeSource takes the bearer token of a kubeconfig user from client-go's own transport wrappers (static token,
// token file, exec plugin, oidc auth-provider): a request is run through them into a recorder that keeps the
// Authorization header and never sends anything. client-go does its own caching and refreshing; the source
// rebuilds the wrappers when the kubeconfig or token file changes and after kedge refused a token.
type kubeSource struct {
	name, user, path string
	log              logging.Logger

	// sem serialises Token calls (and so client-go's exec runs and refreshes) while letting waiters give up with
	// their context. Holding it guards the fields up to rmu.
	sem    chan struct{}
	rt     http.RoundTripper // client-go's wrappers around recorder
	host   string            // the URL requests are built for
	stamps []fileStamp       // kubeconfig and token file, as they were when rt was built

	rmu      sync.Mutex // guards rejected, so that Invalidate never waits for a running Token call
	rejected string     // token kedge refused (Invalidate); "" if none
}

var _ Source = (*kubeSource)(nil)

func newKubeSource(c config.AuthSource, log logging.Logger) (*kubeSource, error) {
	path := c.KubeconfigPath
	if path == "" {
		path = clientcmd.RecommendedHomeFile
	}
	s := &kubeSource{name: c.Name, user: c.KubeUser, path: path, log: log, sem: make(chan struct{}, 1)}
	if err := s.build(); err != nil {
		return nil, s.error(err)
	}
	return s, nil
}

func (s *kubeSource) Name() string { return s.name }

func (s *kubeSource) error(err error) error {
	return &Error{Source: s.name, Err: err, Hint: fmt.Sprintf("check user %q in %s", s.user, s.path)}
}

// build loads the kubeconfig and makes client-go's auth wrappers for the user. The caller holds sem (or owns s).
func (s *kubeSource) build() error {
	kubeStamp := stampOf(s.path)
	kc, err := clientcmd.LoadFromFile(s.path)
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	if _, ok := kc.AuthInfos[s.user]; !ok {
		users := make([]string, 0, len(kc.AuthInfos))
		for u := range kc.AuthInfos {
			users = append(users, u)
		}
		slices.Sort(users)
		return fmt.Errorf("kubeconfig has no user %q (users: %s)", s.user, strings.Join(users, ", "))
	}
	userContext(kc, s.user)
	loader := &clientcmd.ClientConfigLoadingRules{ExplicitPath: s.path} // where refreshed auth-provider tokens go
	cfg, err := clientcmd.NewNonInteractiveClientConfig(*kc, kubeContext, &clientcmd.ConfigOverrides{}, loader).ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig user %q: %w", s.user, err)
	}
	if cfg.BearerToken == "" && cfg.BearerTokenFile == "" && cfg.ExecProvider == nil && cfg.AuthProvider == nil {
		return fmt.Errorf("kubeconfig user %q has no token, token file, exec plugin or auth provider; winch can only forward bearer tokens", s.user)
	}
	if cfg.Impersonate.UserName != "" {
		s.log.Warn("kubeconfig user impersonates another user; winch forwards only the token, not the impersonation")
	}
	rt, err := rest.HTTPWrappersForConfig(cfg, recorder{})
	if err != nil {
		return fmt.Errorf("kubeconfig user %q: %w", s.user, err)
	}
	s.rt, s.host = rt, cfg.Host
	if u, err := url.Parse(cfg.Host); err != nil || !u.IsAbs() || u.Host == "" {
		s.host = placeholderServer
	}
	s.stamps = []fileStamp{kubeStamp}
	if cfg.BearerTokenFile != "" {
		s.stamps = append(s.stamps, stampOf(cfg.BearerTokenFile))
	}
	return nil
}

// userContext adds a context that uses the user, with the cluster of an existing context of the user if one has an
// https server (exec plugins may ask for cluster info), else a placeholder cluster.
func userContext(kc *clientcmdapi.Config, user string) {
	cluster := ""
	names := make([]string, 0, len(kc.Contexts))
	for n := range kc.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	if c, ok := kc.Contexts[kc.CurrentContext]; ok && c.AuthInfo == user {
		names = append([]string{kc.CurrentContext}, names...)
	}
	for _, n := range names {
		c := kc.Contexts[n]
		if cl, ok := kc.Clusters[c.Cluster]; ok && c.AuthInfo == user && strings.HasPrefix(cl.Server, "https://") {
			cluster = c.Cluster
			break
		}
	}
	if cluster == "" {
		cluster = kubeContext
		kc.Clusters[cluster] = &clientcmdapi.Cluster{Server: placeholderServer}
	}
	kc.Contexts[kubeContext] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: user}
	kc.CurrentContext = kubeContext
}

func (s *kubeSource) Token(ctx context.Context) (string, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return "", s.error(ctx.Err())
	}
	defer func() { <-s.sem }()

	s.rmu.Lock()
	rejected := s.rejected
	s.rejected = ""
	s.rmu.Unlock()
	if rejected != "" || s.changed() {
		if err := s.build(); err != nil {
			return "", s.error(err)
		}
	}
	tok, status, err := s.capture(ctx, rejected)
	if err == nil && status == http.StatusUnauthorized {
		// client-go's exec plugin runs again when its token is answered 401; the retry picks up the new one.
		tok, _, err = s.capture(ctx, "")
	}
	if err != nil {
		return "", s.error(err)
	}
	return tok, nil
}

// capture runs a request through client-go's wrappers and returns the bearer token they set, and the status the
// recorder answered (401 when the token is reject).
func (s *kubeSource) capture(ctx context.Context, reject string) (string, int, error) {
	c := &captured{reject: reject}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, captureKey{}, c), http.MethodGet, s.host, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := s.rt.RoundTrip(req)
	if err != nil {
		return "", 0, err
	}
	_ = resp.Body.Close()
	tok, ok := strings.CutPrefix(c.auth, "Bearer ")
	if !ok || tok == "" {
		return "", 0, errors.New("client-go produced no bearer token for the user (winch cannot forward client certificates or basic auth)")
	}
	if !isTokenString(tok) {
		return "", 0, errors.New("the user's token has characters a bearer token cannot have")
	}
	return tok, resp.StatusCode, nil
}

// changed reports whether the kubeconfig or token file changed since the wrappers were built.
func (s *kubeSource) changed() bool {
	for _, st := range s.stamps {
		if !st.same(stampOf(st.path)) {
			return true
		}
	}
	return false
}

// Invalidate makes the next Token call rebuild the wrappers (re-reading the kubeconfig and token file) and tell
// client-go that token was refused, so that an exec plugin runs again.
func (s *kubeSource) Invalidate(token string) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.rejected = token
}

func (s *kubeSource) login(ctx context.Context, _ LoginOptions) error {
	_, err := s.Token(ctx)
	return err
}

func (s *kubeSource) logout() error { return nil }

// recorder is the innermost RoundTripper under client-go's wrappers: it keeps the Authorization header in the
// request's captured value and answers without sending anything.
type recorder struct{}

type captureKey struct{}

type captured struct {
	auth   string
	reject string
}

func (recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	c, ok := req.Context().Value(captureKey{}).(*captured)
	if !ok {
		return nil, errors.New("credentials: kube recorder used outside a capture")
	}
	c.auth = req.Header.Get("Authorization")
	status := http.StatusOK
	if c.reject != "" && c.auth == "Bearer "+c.reject {
		status = http.StatusUnauthorized
	}
	return &http.Response{
		Status: http.StatusText(status), StatusCode: status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: http.NoBody, Request: req,
	}, nil
}

// fileStamp identifies a version of a file by its identity, size and modification time.
type fileStamp struct {
	path string
	info os.FileInfo // nil if the file could not be read
}

func stampOf(path string) fileStamp {
	info, err := os.Stat(path)
	if err != nil {
		return fileStamp{path: path}
	}
	return fileStamp{path: path, info: info}
}

func (a fileStamp) same(b fileStamp) bool {
	if a.info == nil || b.info == nil {
		return a.info == nil && b.info == nil
	}
	return os.SameFile(a.info, b.info) && a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime())
}
