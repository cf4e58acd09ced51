package config

import (
	"errors"
	"regexp"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/document"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
	"github.com/kedge-proxy/kedge/proto/winchconfig"
)

// LoadMapper reads the mapper document from path, or takes inline when path is empty, and validates and converts it.
func LoadMapper(path, inline string) (*Mapper, error) {
	if path == "" && inline == "" {
		return nil, &FieldError{File: MapperPathName, Reason: "not set: winch needs a mapper document with at least one route (a file, or the document itself in " + MapperInlineName + ")"}
	}
	data, name, err := document.Read(path, inline, MapperInlineName)
	if err != nil {
		return nil, err
	}
	return ParseMapper(data, name)
}

// ParseMapper is LoadMapper without I/O: data is the document (JSON or YAML), name is used in errors.
func ParseMapper(data []byte, name string) (*Mapper, error) {
	doc := &winchconfig.MapperConfig{}
	if err := decode(name, data, doc); err != nil {
		return nil, err
	}
	v := &problems{file: name}
	if len(doc.GetRoutes()) == 0 {
		v.add("routes", "at least one route is required: without routes winch sends nothing to a kedge")
	}
	routes := make([]mapper.Route, 0, len(doc.GetRoutes()))
	for i, r := range doc.GetRoutes() {
		routes = append(routes, v.route(indexed("routes", i), r))
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	return &Mapper{Name: name, Routes: routes}, nil
}

// problems collects the semantic problems of one document.
type problems struct {
	file string
	errs []error
}

func (p *problems) add(field, reason string) {
	p.errs = append(p.errs, &FieldError{File: p.file, Field: field, Reason: reason})
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// route validates and converts one route; path is its position ("routes[2]").
func (p *problems) route(path string, r *winchconfig.Route) mapper.Route {
	out := mapper.Route{
		ProxyAuth:   r.GetProxyAuth(),
		BackendAuth: r.GetBackendAuth(),
		MITM:        r.GetMitm(),
	}
	switch r.GetProtocol() {
	case winchconfig.Protocol_HTTP:
		out.Protocol = mapper.ProtocolHTTP
	case winchconfig.Protocol_GRPC:
		out.Protocol = mapper.ProtocolGRPC
	}
	p.authName(path+".proxy_auth", out.ProxyAuth)
	p.authName(path+".backend_auth", out.BackendAuth)
	if out.MITM && out.Protocol == mapper.ProtocolGRPC {
		p.add(path+".mitm", "only applies to HTTPS (CONNECT) traffic, which a GRPC route never sees")
	}
	switch {
	case r.GetDirect() != nil:
		d := r.GetDirect()
		out.Direct, out.URL = d.GetKey(), d.GetUrl()
		if out.Direct == "" {
			p.add(path+".direct.key", "required: the destination \"host\" or \"host:port\"")
		} else if err := mapper.CheckDestination(out.Direct); err != nil {
			var ipErr *mapper.IPLiteralError
			if errors.As(err, &ipErr) {
				p.add(path+".direct.key", quote(out.Direct)+" is an IP address, which winch never maps: kedge routes by name")
			} else {
				p.add(path+".direct.key", quote(out.Direct)+" is not \"host\" or \"host:port\"")
			}
		}
		if strings.Contains(out.URL, "${") {
			p.add(path+".direct.url", "direct routes substitute nothing; use a regexp route for \"${name}\"")
		} else {
			p.kedgeURL(path+".direct.url", out.URL)
		}
	case r.GetRegexp() != nil:
		x := r.GetRegexp()
		out.URL = x.GetUrl()
		if x.GetExp() == "" {
			p.add(path+".regexp.exp", "required: an RE2 expression")
			if out.URL == "" {
				p.add(path+".regexp.url", "required: the kedge URL")
			}
			return out
		}
		re, err := regexp.Compile(x.GetExp())
		if err != nil {
			p.add(path+".regexp.exp", "invalid RE2 expression: "+strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			return out
		}
		out.Regexp = re
		p.template(path+".regexp.url", out.URL, re)
	default:
		p.add(path, "one of direct or regexp is required")
	}
	p.plaintextTokens(path, r, out)
	return out
}

// plaintextTokens refuses a route that would send a token to a kedge without TLS, which winch never does (the HTTP
// proxy would refuse every request of the route). gRPC always reaches kedges over TLS, whatever the scheme.
func (p *problems) plaintextTokens(path string, r *winchconfig.Route, out mapper.Route) {
	field := path + ".direct.url"
	if r.GetDirect() == nil {
		field = path + ".regexp.url"
	}
	if out.Protocol == mapper.ProtocolGRPC || !strings.HasPrefix(strings.ToLower(out.URL), "http://") {
		return
	}
	for _, name := range []string{out.ProxyAuth, out.BackendAuth} {
		if name != "" {
			p.add(field, "would send the token of "+quote(name)+" without TLS: use https:// (winch sends tokens only over TLS)")
			return
		}
	}
}

// authName checks the form of an auth source reference; whether the source exists is CheckAuthReferences' job.
func (p *problems) authName(field, name string) {
	if name != "" && !validSourceName(name) {
		p.add(field, quote(name)+" is not a valid auth source name")
	}
}

// kedgeURL checks a kedge URL: http or https, a host, and nothing after it but an optional "/".
func (p *problems) kedgeURL(field, raw string) {
	if raw == "" {
		p.add(field, "required: the kedge URL, like \"https://kedge.example.com:443\"")
		return
	}
	u, err := mapper.ParseKedgeURL(raw)
	if err != nil {
		p.add(field, strings.TrimPrefix(err.Error(), "kedge URL "+quote(raw)+": "))
		return
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		p.add(field, "must be scheme://host[:port] only: winch uses no path, query, fragment or user info of a kedge URL")
	}
}

// template checks a regexp route's URL: every "${name}" names a group of re, and the URL is valid once the groups
// are substituted.
func (p *problems) template(field, tmpl string, re *regexp.Regexp) {
	if tmpl == "" {
		p.add(field, "required: the kedge URL, like \"https://${cluster}.kedge.example.com:443\"")
		return
	}
	sample := tmpl
	for rest := tmpl; ; {
		start := strings.Index(rest, "${")
		if start < 0 {
			break
		}
		end := strings.IndexByte(rest[start:], '}')
		if end < 0 {
			p.add(field, "unclosed \"${\"")
			return
		}
		name := rest[start+2 : start+end]
		if name == "" || re.SubexpIndex(name) < 0 {
			p.add(field, "${"+name+"} is not a named group of exp (named groups: "+groupNames(re)+")")
			return
		}
		sample = strings.ReplaceAll(sample, "${"+name+"}", "x")
		rest = rest[start+end+1:]
	}
	p.kedgeURL(field, sample)
}

func groupNames(re *regexp.Regexp) string {
	var names []string
	for _, n := range re.SubexpNames() {
		if n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none; write (?P<name>...)"
	}
	return strings.Join(names, ", ")
}
