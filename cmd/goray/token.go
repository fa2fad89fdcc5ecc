package main

import (
	"errors"
	"flag"
	"strings"

	"github.com/goray/goray/internal/rpc"
)

// errTokenArg refuses a token on the command line: it would be in the
// process list, for every user of the machine to read.
var errTokenArg = errors.New("--token is not accepted: a token on the command line is visible to every user of the machine (the process list); set GORAY_TOKEN, or pass --token-file with a file that holds it")

// refuseTokenArg fails when args pass a token as a flag; the error does not
// repeat the token. Every command's arguments go through it first.
func refuseTokenArg(args []string) error {
	for _, a := range args {
		if a == "--" {
			return nil
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && name == "token" {
			return errTokenArg
		}
	}
	return nil
}

// tokenFlags registers --token-file on fs; resolve reads the file into
// *token once fs is parsed.
func tokenFlags(fs *flag.FlagSet, token *string, usage string) (resolve func() error) {
	var file string
	fs.StringVar(&file, "token-file", "", usage)
	return func() error {
		if file == "" {
			return nil
		}
		t, err := rpc.ReadTokenFile(file)
		if err != nil {
			return err
		}
		*token = t
		return nil
	}
}
