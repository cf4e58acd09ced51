package credentials

import (
	"context"
	"errors"
)

// errNoDummyValue is the original's failure of a dummy source without a value, kept so that tests and users
// recognise it.
var errNoDummyValue = errors.New("dummy auth source: no value specified")

// staticSource is a token or dummy source: a fixed value from the auth document.
type staticSource struct {
	name  string
	token string
	dummy bool
}

var _ Source = (*staticSource)(nil)

func (s *staticSource) Name() string { return s.name }

func (s *staticSource) Token(context.Context) (string, error) {
	if s.token == "" {
		if s.dummy {
			return "", &Error{Source: s.name, Err: errNoDummyValue, Hint: "set \"value\" in the auth config"}
		}
		return "", &Error{Source: s.name, Err: errors.New("no token specified"), Hint: "set \"token\" in the auth config"}
	}
	return s.token, nil
}

// Invalidate does nothing: a static token cannot be refreshed.
func (s *staticSource) Invalidate(string) {}

func (s *staticSource) login(ctx context.Context, _ LoginOptions) error {
	_, err := s.Token(ctx)
	return err
}

func (s *staticSource) logout() error { return nil }
