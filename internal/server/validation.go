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
		Holdings: applianceView{s}, History: applianceView{s}, Standby: applianceView{s}, Credentials: pullCredentials{s: s, user: caller},
		MaxAge: s.cfg.Validation.MaxAge, Log: s.log})
}

// pullCredentials mint the registry tokens a run pulls private projects'
// images with: a user's, granting what that user may pull (auth's
// policy, as the token service does), or, for the appliance itself,
// pull on the repository asked.
type pullCredentials struct {
	s    *Server
	user string // "": the appliance
}

// applianceSubject is the subject of the appliance's own pull tokens.
const applianceSubject = "appliance"

func (c pullCredentials) Who() string {
	if c.user == "" {
		return "the appliance (a scheduled run)"
	}
	return c.user
}

func (c pullCredentials) PullToken(_ context.Context, repo string) (string, error) {
	subject := c.user
	grant := []auth.ResourceActions{{Type: "repository", Name: repo, Actions: []string{auth.ActionPull}}}
	if c.user != "" {
		u, ok := c.s.users.Get(c.user)
		if !ok {
			return "", fmt.Errorf("validation: user %s no longer exists", c.user)
		}
		grant = c.s.authz.Grant(auth.Principal{Name: u.Name, Role: u.Role}, []auth.Access{{Type: "repository", Name: repo, Action: auth.ActionPull}})
	} else {
		subject = applianceSubject
	}
	tok, _, err := c.s.tokens.Issue(subject, grant)
	if err != nil {
		return "", fmt.Errorf("validation: %w", err)
	}
	return tok, nil
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
