package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/identity"
)

// identityCmd is "kedge identity jwks": it prints the JSON Web Key Set of the identity signing key, what the debug
// port serves at /.well-known/jwks.json, for backends that cannot reach that port. It reads the key file only.
func identityCmd(args []string, stdout, stderr io.Writer) int {
	const usage = "Usage: kedge identity jwks --server_identity_signing_key_file=PATH\n\n" +
		"Prints the JSON Web Key Set (public keys only) that verifies the X-Kedge-Identity tokens kedge signs with\n" +
		"that key: what the debug port serves at /.well-known/jwks.json.\n\nFlags:\n"
	if len(args) == 0 || args[0] != "jwks" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprint(stderr, "kedge identity: want the subcommand jwks\n"+usage)
		return 2
	}
	fs := pflag.NewFlagSet("kedge identity jwks", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	keyFile := fs.String("server_identity_signing_key_file", "", "PEM private key (ECDSA P-256 or RSA) whose public key to print")
	fs.SetNormalizeFunc(config.NormalizeFlagName)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "kedge identity jwks: %v (see --help)\n", err)
		return 2
	}
	if fs.NArg() > 0 || *keyFile == "" {
		fmt.Fprintln(stderr, "kedge identity jwks: give exactly --server_identity_signing_key_file (see --help)")
		return 2
	}
	key, err := identity.LoadKey(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "kedge identity jwks: %v\n", err)
		return 1
	}
	b, err := identity.JWKS(key)
	if err != nil {
		fmt.Fprintf(stderr, "kedge identity jwks: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", b)
	return 0
}
