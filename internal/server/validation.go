package server

import (
	"context"

	"github.com/labstack/echo/v4"

	"github.com/appliance-dev/appliance/internal/bootstrap"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/server/validationapi"
	"github.com/appliance-dev/appliance/internal/validate"
)

// newValidationAPI gives the validation gate's routes
// (internal/server/validationapi) what they need of the server.
func (s *Server) newValidationAPI() (*validationapi.API, error) {
	return validationapi.New(validationapi.Deps{
		DataDir:      s.cfg.DataDir,
		Validator:    s.validator,
		Signer:       s.receiptKey,
		Log:          s.log,
		Caller:       func(c echo.Context) string { return principal(c).Name },
		Note:         func(c echo.Context, target string, kv ...string) { auditNote(c, target, kv...) },
		RequireUser:  s.requireUser,
		RequireAdmin: s.requireAdmin,
	})
}

// validator is the gate of one run: the advertised address, the CA, the
// bundle trust and the receipt key, and what only the appliance knows.
func (s *Server) validator() (*validate.Validator, error) {
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
		Holdings: applianceView{s}, History: applianceView{s}, Standby: applianceView{s}, MaxAge: s.cfg.Validation.MaxAge, Log: s.log})
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
