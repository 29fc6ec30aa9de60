package server

import (
	"context"
	"fmt"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/server/validationapi"
	"github.com/appliance-dev/appliance/internal/validate"
)

// newValidationAPI gives the validation gate's routes
// (internal/server/validationapi) what they need of the server.
func (s *Server) newValidationAPI() (*validationapi.API, error) {
	return validationapi.New(validationapi.Deps{
		DataDir:   s.cfg.DataDir,
		Validator: s.validator,
		MayPull: func(c echo.Context) func(string) bool {
			p := principal(c)
			if s.authz.SeesAll(p) {
				return nil
			}
			return func(repo string) bool { return s.authz.MayPull(p, repo) }
		},
		Signer:       s.receiptKey,
		Log:          s.log,
		Caller:       func(c echo.Context) string { return principal(c).Name },
		Note:         func(c echo.Context, target string, kv ...string) { auditNote(c, target, kv...) },
		RequireUser:  s.requireUser,
		RequireAdmin: s.requireAdmin,
	})
}

// validator is the gate of one run: the advertised address, the CA, the
// bundle trust and the receipt key, what only the appliance knows, and
// the credentials of caller (a user's name; "" for the appliance).
func (s *Server) validator(caller string) (*validate.Validator, error) {
	pub, err := s.receiptKey.PublicKey()
	if err != nil {
		return nil, err
	}
	rk, err := bundle.ParsePublicKey(receiptPubFile, pub)
	if err != nil {
		return nil, err
	}
	u, names := validationapi.Advertised(s.cfg.Hostnames, s.cfg.HTTPSAddr, s.HTTPSAddr())
	return validate.New(validate.Options{URL: u, Names: names, CAPEM: s.pki.CAPEM, Trust: s.trust, ReceiptKeys: []bundle.TrustedKey{rk},
		Holdings: applianceView{s}, History: applianceView{s}, Standby: applianceView{s}, Credentials: validationapi.Credentials{User: caller, Mint: s.pullToken},
		MaxAge: s.cfg.Validation.MaxAge, Log: s.log})
}

// pullToken issues a registry token for a validation run granting pull
// on repo: what user may pull (auth's policy, as the token service
// decides), or, for the appliance itself (user ""), pull.
func (s *Server) pullToken(user, repo string) (string, error) {
	subject, grant := validationapi.ApplianceSubject, []auth.ResourceActions{{Type: "repository", Name: repo, Actions: []string{auth.ActionPull}}}
	if user != "" {
		u, ok := s.users.Get(user)
		if !ok {
			return "", fmt.Errorf("validation: user %s no longer exists", user)
		}
		subject, grant = u.Name, s.authz.Grant(auth.Principal{Name: u.Name, Role: u.Role}, []auth.Access{{Type: "repository", Name: repo, Action: auth.ActionPull}})
	}
	tok, _, err := s.tokens.Issue(subject, grant)
	return tok, err
}

// applianceView is what only the appliance knows, for the gate: what it
// holds (its receipt), its import history, a standby's drift.
type applianceView struct{ s *Server }

func (v applianceView) Receipt(ctx context.Context) (*bundle.Receipt, error) { return v.s.receipt(ctx) }

func (v applianceView) Imports(context.Context) ([]validate.ImportRecord, error) {
	recs, err := v.s.history.List()
	if err != nil {
		return nil, err
	}
	return validationapi.FromHistory(recs), nil
}

func (v applianceView) StandbyDrift(context.Context) ([]validate.Difference, bool) {
	if v.s.life.Mode() != bootstrap.ModeStandby {
		return nil, false
	}
	return validationapi.FromFollower(v.s.follower.Status()), true
}
