// Command oidcop is the OpenID Provider the e2e tests log winch in at: the example server of github.com/zitadel/oidc/v3
// (its exampleop router with the login and device pages, and its in-memory storage), with what the tests need on top:
//   - one public native client (no secret, PKCE) with the authorization-code, refresh-token and device-code grants
//     and a loopback redirect URL (any port, as RFC 8252 allows native clients);
//   - one user, whose ID tokens carry a "perms" claim (a list of strings);
//   - ID tokens that live for -id_token_lifetime;
//   - POST /fixture/rotate-key: a new signing key replaces the current one, which leaves the JWKS at once;
//   - one log line per token request naming its grant type, so that a test can count refreshes.
//
// Once it listens it prints "oidcop: serving ISSUER". SIGTERM or SIGINT stop it (exit 0).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/text/language"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "oidcop:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:0", "listen address; the issuer is http://ADDR")
	clientID := flag.String("client_id", "winch", "ID of the public native client")
	redirects := flag.String("redirect_uri", "http://127.0.0.1/winch/login/corp", "comma-separated redirect URLs of the client; a loopback one matches any port")
	lifetime := flag.Duration("id_token_lifetime", time.Hour, "lifetime of the ID tokens issued to the client")
	user := flag.String("user", "alice", "the one user's name (also its subject)")
	passwordFile := flag.String("password_file", "", "file holding the user's password (required)")
	perms := flag.String("perms", "proxy", "comma-separated values of the perms claim in the user's ID tokens")
	flag.Parse()
	if *passwordFile == "" {
		return errors.New("-password_file is required")
	}
	pw, err := os.ReadFile(*passwordFile)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	issuer := "http://" + ln.Addr().String()

	keys, err := newKeyRing()
	if err != nil {
		return err
	}
	native := storage.NativeClient(*clientID, strings.Split(*redirects, ",")...)
	st := &fixtureStorage{
		Storage: storage.NewStorageWithClients(oneUser{&storage.User{
			ID: *user, Username: *user, Password: strings.TrimSpace(string(pw)),
			FirstName: *user, Email: *user + "@example.com", EmailVerified: true, PreferredLanguage: language.English,
		}}, map[string]*storage.Client{*clientID: native}),
		clientID: *clientID,
		lifetime: *lifetime,
		perms:    strings.Split(*perms, ","),
		keys:     keys,
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /fixture/rotate-key", func(w http.ResponseWriter, r *http.Request) {
		old, cur, err := keys.rotate()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		log.Info("signing key rotated", "old_kid", old, "new_kid", cur)
		fmt.Fprintln(w, cur)
	})
	mux.Handle("/", exampleop.SetupServer(issuer, st, log, false))
	srv := &http.Server{Handler: logTokenRequests(mux, log), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Printf("oidcop: serving %s\n", issuer)
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// logTokenRequests logs the grant type of every request to the token endpoint. The body is read and put back.
func logTokenRequests(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/token") {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			q, _ := url.ParseQuery(string(body))
			log.Info("token request", "grant_type", q.Get("grant_type"))
		}
		next.ServeHTTP(w, r)
	})
}

// fixtureStorage is the example's in-memory storage with the fixture's client, claims and keys.
type fixtureStorage struct {
	*storage.Storage
	clientID string
	lifetime time.Duration
	perms    []string
	keys     *keyRing
}

// GetClientByClientID gives the fixture's client its grants and ID-token lifetime.
func (s *fixtureStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil || id != s.clientID {
		return c, err
	}
	return nativeClient{Client: c, lifetime: s.lifetime}, nil
}

// SetUserinfoFromRequest adds the perms claim to every ID token (login, device flow and refresh alike).
func (s *fixtureStorage) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	ui.AppendClaims("perms", s.perms)
	return nil
}

// SigningKey, SignatureAlgorithms and KeySet replace the example's fixed key by the rotating one.
func (s *fixtureStorage) SigningKey(context.Context) (op.SigningKey, error) {
	return s.keys.current(), nil
}

func (s *fixtureStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *fixtureStorage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s.keys.current()}}, nil
}

// nativeClient is the example's native client with the device-code grant added and a configurable ID-token lifetime.
type nativeClient struct {
	op.Client
	lifetime time.Duration
}

func (c nativeClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeDeviceCode}
}

func (c nativeClient) IDTokenLifetime() time.Duration { return c.lifetime }

// oneUser is a user store with a single user, whose ID is its name: the example's device pages take the name
// typed in as the subject.
type oneUser struct{ u *storage.User }

func (o oneUser) GetUserByID(id string) *storage.User {
	if id == o.u.ID {
		return o.u
	}
	return nil
}

func (o oneUser) GetUserByUsername(name string) *storage.User {
	if name == o.u.Username {
		return o.u
	}
	return nil
}

// ExampleClientID names the example's JWT-profile service user, which the tests do not use.
func (o oneUser) ExampleClientID() string { return storage.ServiceUserID }

// keyRing holds the one signing key; rotate replaces it.
type keyRing struct {
	mu  sync.Mutex
	cur *signingKey
}

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func newSigningKey() (*signingKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	return &signingKey{id: hex.EncodeToString(id), key: k}, nil
}

func newKeyRing() (*keyRing, error) {
	k, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	return &keyRing{cur: k}, nil
}

func (r *keyRing) current() *signingKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *keyRing) rotate() (oldID, newID string, err error) {
	k, err := newSigningKey()
	if err != nil {
		return "", "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	oldID, r.cur = r.cur.id, k
	return oldID, k.id, nil
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k *signingKey) Key() any                                    { return k.key }
func (k *signingKey) ID() string                                  { return k.id }

// publicKey is the JWKS entry of a signing key.
type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return &p.k.key.PublicKey }
