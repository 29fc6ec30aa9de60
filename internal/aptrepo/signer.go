package aptrepo

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/aptly-dev/aptly/pgp"

	"github.com/appliance-dev/appliance/internal/fsutil"
)

// Key files under Options.Dir.
const (
	keyDir         = "keys"
	secretKeyFile  = "secring.gpg" //nolint:gosec // G101: a file name; the binary OpenPGP secret key, mode 0600
	publicKeyFile  = "pubring.gpg" // binary OpenPGP public key (for gpgv --keyring, apt signed-by)
	armoredKeyFile = "pubring.asc" // the same, ASCII-armored
)

// keyBits is the RSA size of a new signing key: RSA is what every apt and
// gpgv in the field verifies (gpgv 1.4 in old debootstrap hosts included).
const keyBits = 4096

// signer signs Release files with the repository key. It implements aptly's
// pgp.Signer itself rather than using pgp.GoSigner, which prints to stdout
// (silencing it would mean swapping os.Stdout, a process global) and, with
// go-crypto 1.1 and later, writes armor without the CRC24 line that Debian
// 12's gpgv requires. Every armored block written here carries the checksum.
type signer struct {
	entity  *openpgp.Entity
	config  *packet.Config
	public  []byte // binary public key
	armored []byte // armored public key
}

var _ pgp.Signer = (*signer)(nil)

func signingConfig() *packet.Config {
	return &packet.Config{DefaultHash: crypto.SHA256, Algorithm: packet.PubKeyAlgoRSA, RSABits: keyBits}
}

// loadOrCreateKey reads the signing key under dir/keys, or makes one when
// neither keyring exists. A secret keyring that cannot be read is an error
// naming the file; so is a public keyring without its secret one.
func loadOrCreateKey(dir, name string) (*signer, error) {
	kdir := filepath.Join(dir, keyDir)
	if err := os.MkdirAll(kdir, 0o700); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	secPath := filepath.Join(kdir, secretKeyFile)
	pubPath := filepath.Join(kdir, publicKeyFile)
	data, err := os.ReadFile(secPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, perr := os.Stat(pubPath); perr == nil {
			return nil, fmt.Errorf("%w: %s exists but %s does not; restore the secret key from a backup (a new key would break every client that trusts the old one)",
				ErrMissingKey, pubPath, secPath)
		}
		return createKey(kdir, name)
	case err != nil:
		return nil, fmt.Errorf("signing key %s: %w", secPath, err)
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorruptKey, secPath, err)
	}
	if len(el) != 1 || el[0].PrivateKey == nil {
		return nil, fmt.Errorf("%w: %s: want exactly one secret key, found %d entries", ErrCorruptKey, secPath, len(el))
	}
	if el[0].PrivateKey.Encrypted {
		return nil, fmt.Errorf("%w: %s: the secret key is protected by a passphrase", ErrCorruptKey, secPath)
	}
	s, err := newSigner(el[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorruptKey, secPath, err)
	}
	// Rewrite the public files if they are missing or differ (they are
	// derived data, kept for operators and for gpgv --keyring).
	if err := writeIfDifferent(pubPath, s.public, 0o644); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if err := writeIfDifferent(filepath.Join(kdir, armoredKeyFile), s.armored, 0o644); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return s, nil
}

func createKey(kdir, name string) (*signer, error) {
	name = strings.Map(func(c rune) rune {
		if strings.ContainsRune("()<>\x00", c) {
			return -1
		}
		return c
	}, name)
	e, err := openpgp.NewEntity(name, "apt repository signing key", "", signingConfig())
	if err != nil {
		return nil, fmt.Errorf("signing key: generate: %w", err)
	}
	var sec bytes.Buffer
	if err := e.SerializePrivate(&sec, signingConfig()); err != nil {
		return nil, fmt.Errorf("signing key: serialize: %w", err)
	}
	s, err := newSigner(e)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	// Public files first: the secret one is what marks the key as made.
	if err := fsutil.WriteFileAtomic(filepath.Join(kdir, publicKeyFile), s.public, 0o644); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(kdir, armoredKeyFile), s.armored, 0o644); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(kdir, secretKeyFile), sec.Bytes(), 0o600); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	return s, nil
}

func newSigner(e *openpgp.Entity) (*signer, error) {
	var pub bytes.Buffer
	if err := e.Serialize(&pub); err != nil {
		return nil, fmt.Errorf("serialize public key: %w", err)
	}
	var arm bytes.Buffer
	if err := writeArmor(&arm, "PGP PUBLIC KEY BLOCK", pub.Bytes()); err != nil {
		return nil, err
	}
	return &signer{entity: e, config: signingConfig(), public: pub.Bytes(), armored: arm.Bytes()}, nil
}

func writeIfDifferent(path string, data []byte, perm os.FileMode) error {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return nil
	}
	return fsutil.WriteFileAtomic(path, data, perm)
}

// Init, SetKey, SetKeyRing, SetPassphrase and SetBatch satisfy pgp.Signer;
// the key is loaded once by Open and never needs a passphrase.
func (s *signer) Init() error                  { return nil }
func (s *signer) SetKey(string)                {}
func (s *signer) SetKeyRing(string, string)    {}
func (s *signer) SetPassphrase(string, string) {}
func (s *signer) SetBatch(bool)                {}

// DetachedSign writes an armored detached signature of source (Release.gpg).
func (s *signer) DetachedSign(source, destination string) error {
	msg, err := os.Open(source)
	if err != nil {
		return fmt.Errorf("detached sign: %w", err)
	}
	defer msg.Close()
	var sig bytes.Buffer
	if err := openpgp.DetachSign(&sig, s.entity, msg, s.config); err != nil {
		return fmt.Errorf("detached sign %s: %w", filepath.Base(source), err)
	}
	var out bytes.Buffer
	if err := writeArmor(&out, "PGP SIGNATURE", sig.Bytes()); err != nil {
		return err
	}
	return writeFile(destination, out.Bytes())
}

// ClearSign writes source clear-signed (InRelease).
func (s *signer) ClearSign(source, destination string) error {
	text, err := os.ReadFile(source)
	if err != nil {
		return fmt.Errorf("clearsign: %w", err)
	}
	var buf bytes.Buffer
	w, err := clearsign.Encode(&buf, s.entity.PrivateKey, s.config)
	if err != nil {
		return fmt.Errorf("clearsign %s: %w", filepath.Base(source), err)
	}
	if _, err := w.Write(text); err != nil {
		return fmt.Errorf("clearsign %s: %w", filepath.Base(source), err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("clearsign %s: %w", filepath.Base(source), err)
	}
	out, err := rearmorClearsigned(buf.Bytes())
	if err != nil {
		return fmt.Errorf("clearsign %s: %w", filepath.Base(source), err)
	}
	return writeFile(destination, out)
}

const sigBegin = "-----BEGIN PGP SIGNATURE-----"

// rearmorClearsigned rewrites the signature block of a clear-signed message
// with a CRC24 checksum line, whatever the go-crypto version wrote.
func rearmorClearsigned(msg []byte) ([]byte, error) {
	i := bytes.LastIndex(msg, []byte("\n"+sigBegin))
	if i < 0 {
		return nil, errors.New("no signature block in clear-signed output")
	}
	blk, err := armor.Decode(bytes.NewReader(msg[i+1:]))
	if err != nil {
		return nil, fmt.Errorf("decode signature block: %w", err)
	}
	sig, err := io.ReadAll(blk.Body)
	if err != nil {
		return nil, fmt.Errorf("decode signature block: %w", err)
	}
	var out bytes.Buffer
	out.Write(msg[:i+1])
	if err := writeArmor(&out, "PGP SIGNATURE", sig); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// writeArmor writes data as an OpenPGP ASCII armor block (RFC 4880 §6.2)
// with the CRC24 checksum line.
func writeArmor(w io.Writer, blockType string, data []byte) error {
	var b strings.Builder
	b.WriteString("-----BEGIN " + blockType + "-----\n\n")
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 64 {
		b.WriteString(enc[:64] + "\n")
		enc = enc[64:]
	}
	if enc != "" {
		b.WriteString(enc + "\n")
	}
	c := crc24(data)
	b.WriteString("=" + base64.StdEncoding.EncodeToString([]byte{byte(c >> 16 & 0xff), byte(c >> 8 & 0xff), byte(c & 0xff)}) + "\n")
	b.WriteString("-----END " + blockType + "-----\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write armor: %w", err)
	}
	return nil
}

func crc24(data []byte) uint32 {
	const (
		init = 0xb704ce
		poly = 0x1864cfb
	)
	crc := uint32(init)
	for _, b := range data {
		crc ^= uint32(b) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= poly
			}
		}
	}
	return crc & 0xffffff
}

// writeFile writes a signature file; publish syncs the tree before the
// switch.
func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644) //nolint:gosec // G302: a signature, public by design
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
