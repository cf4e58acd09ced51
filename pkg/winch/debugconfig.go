package winch

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/kedge-proxy/kedge/pkg/winch/config"
	"github.com/kedge-proxy/kedge/pkg/winch/credentials"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// debugConfig is the JSON of /debug/config: the running routes and auth sources, snake_case, without secrets (no
// token, client secret, refresh token or key: only names, kinds, issuers, client IDs, scopes and file paths).
type debugConfig struct {
	MapperDocument string            `json:"mapper_document"`
	AuthDocument   string            `json:"auth_document"` // "" when none was given
	LoadedAt       time.Time         `json:"loaded_at"`
	Unmatched      string            `json:"unmatched"`
	Routes         []debugRoute      `json:"routes"`
	AuthSources    []debugAuthSource `json:"auth_sources"`
	Warnings       []string          `json:"warnings"`
}

type debugRoute struct {
	Index       int    `json:"index"`
	Direct      string `json:"direct,omitempty"`
	Regexp      string `json:"regexp,omitempty"`
	URL         string `json:"url"`
	Protocol    string `json:"protocol"`
	ProxyAuth   string `json:"proxy_auth,omitempty"`
	BackendAuth string `json:"backend_auth,omitempty"`
	MITM        bool   `json:"mitm"`
}

type debugAuthSource struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Status is "ok", or "unavailable" with Error saying why (the source cannot be loaded; its routes fail).
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`

	KubeUser               string   `json:"kube_user,omitempty"`
	KubeconfigPath         string   `json:"kubeconfig_path,omitempty"`
	Provider               string   `json:"provider,omitempty"`
	ClientID               string   `json:"client_id,omitempty"`
	Scopes                 []string `json:"scopes,omitempty"`
	CacheDir               string   `json:"cache_dir,omitempty"`
	LoginCallbackPath      string   `json:"login_callback_path,omitempty"`
	ServiceAccountJSONPath string   `json:"service_account_json_path,omitempty"`
}

// serveDebugConfig serves /debug/config from the running snapshot.
func (w *Winch) serveDebugConfig(rw http.ResponseWriter, _ *http.Request) {
	s := w.snap.Load()
	out := debugConfig{
		MapperDocument: s.dyn.Mapper.Name,
		AuthDocument:   s.dyn.Auth.Name,
		LoadedAt:       s.pacTime.UTC(),
		Unmatched:      w.cfg.Unmatched,
		Routes:         debugRoutes(s.dyn.Mapper.Routes),
		AuthSources:    debugAuthSources(s.dyn.Auth, s.creds),
		Warnings:       append(w.cfg.flagWarnings(), w.cfg.documentWarnings()...),
	}
	for _, u := range unavailableSources(s.creds, s.dyn.Mapper.Routes) {
		out.Warnings = append(out.Warnings, unavailableWarning(u))
	}
	if out.Warnings == nil {
		out.Warnings = []string{}
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(rw)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

func debugRoutes(routes []mapper.Route) []debugRoute {
	out := make([]debugRoute, 0, len(routes))
	for i, r := range routes {
		d := debugRoute{Index: i, Direct: r.Direct, URL: r.URL, Protocol: r.Protocol.String(),
			ProxyAuth: r.ProxyAuth, BackendAuth: r.BackendAuth, MITM: r.MITM}
		if r.Regexp != nil {
			d.Regexp = r.Regexp.String()
		}
		out = append(out, d)
	}
	return out
}

// debugAuthSources lists the sources of auth without their secrets (Token and ClientSecret are never copied).
func debugAuthSources(auth *config.Auth, set *credentials.Set) []debugAuthSource {
	broken := map[string]string{}
	for _, err := range set.Unavailable() {
		var srcErr *credentials.Error
		if errors.As(err, &srcErr) {
			broken[srcErr.Source] = err.Error()
		}
	}
	out := make([]debugAuthSource, 0, len(auth.Sources))
	for _, s := range auth.Sources {
		d := debugAuthSource{
			Name: s.Name, Kind: string(s.Kind), Status: "ok",
			KubeUser: s.KubeUser, KubeconfigPath: s.KubeconfigPath,
			Provider: s.Provider, ClientID: s.ClientID, Scopes: s.Scopes,
			CacheDir: s.CacheDir, LoginCallbackPath: s.LoginCallbackPath, ServiceAccountJSONPath: s.ServiceAccountJSONPath,
		}
		if msg, ok := broken[s.Name]; ok {
			d.Status, d.Error = "unavailable", msg
		}
		out = append(out, d)
	}
	return out
}
