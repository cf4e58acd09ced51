package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/kedge-proxy/kedge/pkg/shared/document"
	"github.com/kedge-proxy/kedge/proto/winchconfig"
)

// AuthKind is the kind of an auth source, named as in the auth document.
type AuthKind string

// Auth source kinds.
const (
	KindDummy              AuthKind = "dummy"
	KindToken              AuthKind = "token"
	KindKube               AuthKind = "kube"
	KindOIDC               AuthKind = "oidc"
	KindServiceAccountOIDC AuthKind = "service_account_oidc"
)

// AuthSource is one validated auth source. Which fields are set depends on Kind; the others are empty. Paths have
// "$VAR", "${VAR}" and a leading "~/" expanded.
type AuthSource struct {
	// Name identifies the source in mapper routes.
	Name string
	// Kind selects the source type.
	Kind AuthKind

	// Token is the fixed token of KindToken, and the value of KindDummy (empty: every token request fails).
	Token string

	// KubeUser is the kubeconfig user (KindKube).
	KubeUser string
	// KubeconfigPath is the kubeconfig file (KindKube); "" means the default, ~/.kube/config.
	KubeconfigPath string

	// Provider is the OIDC issuer URL (KindOIDC, KindServiceAccountOIDC).
	Provider string
	// ClientID and ClientSecret identify winch at the provider (KindOIDC, KindServiceAccountOIDC).
	ClientID, ClientSecret string
	// Scopes are the OAuth2 scopes to request (KindOIDC, KindServiceAccountOIDC).
	Scopes []string
	// CacheDir is the token cache directory (KindOIDC); "" means winch's default.
	CacheDir string
	// LoginCallbackPath is the path of the login callback on winch's HTTP port (KindOIDC); "" disables interactive
	// login.
	LoginCallbackPath string
	// ServiceAccountJSONPath is the Google service-account key file (KindServiceAccountOIDC).
	ServiceAccountJSONPath string
}

// String describes the source without its secrets, so that logging a source never leaks a token.
func (s AuthSource) String() string {
	switch s.Kind {
	case KindKube:
		return fmt.Sprintf("%s (kube user %q in %q)", s.Name, s.KubeUser, s.KubeconfigPath)
	case KindOIDC, KindServiceAccountOIDC:
		return fmt.Sprintf("%s (%s at %s, client %q)", s.Name, s.Kind, s.Provider, s.ClientID)
	}
	return fmt.Sprintf("%s (%s)", s.Name, s.Kind)
}

// GoString is String, so that %#v does not print secrets either.
func (s AuthSource) GoString() string { return "config.AuthSource{" + s.String() + "}" }

// LoadAuth reads the auth document from path, or takes inline when path is empty, and validates and converts it.
func LoadAuth(path, inline string) (*Auth, error) {
	if path == "" && inline == "" {
		return &Auth{}, nil // no auth document: no sources
	}
	data, name, err := document.Read(path, inline, AuthInlineName)
	if err != nil {
		return nil, err
	}
	return ParseAuth(data, name)
}

// ParseAuth is LoadAuth without I/O (except reading the environment for path expansion): data is the document (JSON
// or YAML; empty means no sources), name is used in errors.
func ParseAuth(data []byte, name string) (*Auth, error) {
	doc := &winchconfig.AuthConfig{}
	if err := decode(name, data, doc); err != nil {
		return nil, err
	}
	v := &problems{file: name}
	names := map[string]string{}     // source name -> field path of its first use
	callbacks := map[string]string{} // login callback path -> field path of its first use
	sources := make([]AuthSource, 0, len(doc.GetAuthSources()))
	for i, s := range doc.GetAuthSources() {
		path := indexed("auth_sources", i)
		out := v.source(path, s)
		if out.Name != "" {
			if prev, dup := names[out.Name]; dup {
				v.add(path+".name", quote(out.Name)+" is already the name of "+prev)
			}
			names[out.Name] = path
		}
		if cb := out.LoginCallbackPath; cb != "" {
			if prev, dup := callbacks[cb]; dup {
				v.add(path+".oidc.login_callback_path", quote(cb)+" is already the callback of "+prev)
			}
			callbacks[cb] = path
		}
		sources = append(sources, out)
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	return &Auth{Name: name, Sources: sources}, nil
}

// source validates and converts one auth source; path is its position ("auth_sources[1]").
func (p *problems) source(path string, s *winchconfig.AuthSource) AuthSource {
	out := AuthSource{Name: s.GetName()}
	switch {
	case out.Name == "":
		p.add(path+".name", "required: routes refer to the source by it")
	case !validSourceName(out.Name):
		p.add(path+".name", quote(out.Name)+" may not contain spaces, control characters, '/', '?', '#' or '%'")
	}
	switch t := s.GetType().(type) {
	case *winchconfig.AuthSource_Dummy:
		out.Kind, out.Token = KindDummy, t.Dummy.GetValue()
	case *winchconfig.AuthSource_Token:
		out.Kind, out.Token = KindToken, t.Token.GetToken()
		if out.Token == "" {
			p.add(path+".token.token", "required: the bearer token")
		}
	case *winchconfig.AuthSource_Kube:
		out.Kind, out.KubeUser, out.KubeconfigPath = KindKube, t.Kube.GetUser(), expandPath(t.Kube.GetPath())
		if out.KubeUser == "" {
			p.add(path+".kube.user", "required: the name of an entry under \"users:\" in the kubeconfig")
		}
	case *winchconfig.AuthSource_Oidc:
		o := t.Oidc
		out.Kind = KindOIDC
		out.Provider, out.ClientID, out.ClientSecret, out.Scopes = o.GetProvider(), o.GetClientId(), o.GetSecret(), o.GetScopes()
		out.CacheDir, out.LoginCallbackPath = expandPath(o.GetPath()), o.GetLoginCallbackPath()
		p.oidc(path+".oidc", out)
		if cb := out.LoginCallbackPath; cb != "" && (!strings.HasPrefix(cb, "/") || cb == "/" || strings.ContainsAny(cb, "?# ")) {
			p.add(path+".oidc.login_callback_path", quote(cb)+" must be a path like \"/login/callback\"")
		}
	case *winchconfig.AuthSource_ServiceAccountOidc:
		o := t.ServiceAccountOidc
		out.Kind = KindServiceAccountOIDC
		out.Provider, out.ClientID, out.ClientSecret, out.Scopes = o.GetProvider(), o.GetClientId(), o.GetSecret(), o.GetScopes()
		out.ServiceAccountJSONPath = expandPath(o.GetServiceAccountJsonPath())
		p.oidc(path+".service_account_oidc", out)
		if out.ServiceAccountJSONPath == "" {
			p.add(path+".service_account_oidc.service_account_json_path", "required: the service-account key file")
		}
	default:
		p.add(path, "one of dummy, token, kube, oidc or service_account_oidc is required")
	}
	return out
}

// oidc checks the fields that both OIDC kinds share.
func (p *problems) oidc(path string, s AuthSource) {
	if s.Provider == "" {
		p.add(path+".provider", "required: the issuer URL")
	} else if u, err := url.Parse(s.Provider); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		p.add(path+".provider", quote(s.Provider)+" is not an http(s) issuer URL")
	}
	if s.ClientID == "" {
		p.add(path+".client_id", "required: the OAuth2 client ID")
	}
	for i, sc := range s.Scopes {
		if sc == "" || strings.ContainsFunc(sc, unicode.IsSpace) {
			p.add(fmt.Sprintf("%s.scopes[%d]", path, i), quote(sc)+" is not a scope (one scope per entry)")
		}
	}
}

// validSourceName rejects names that could not be used in a URL path (/winch/logout/NAME) or on a command line.
func validSourceName(name string) bool {
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' || r == '?' || r == '#' || r == '%' || r == unicode.ReplacementChar {
			return false
		}
	}
	return true
}

// expandPath expands environment variables and a leading "~/".
func expandPath(p string) string {
	if p == "" {
		return ""
	}
	p = os.ExpandEnv(p)
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			p = filepath.Join(home, rest)
		}
	}
	return p
}
