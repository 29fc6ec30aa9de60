package server

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/appliance-dev/appliance/internal/config"
	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/registry"
)

// writerIDFile holds the identity this appliance writes into an object
// store's lock object; it survives restarts, so a restarted writer takes
// its own lock back.
const writerIDFile = "storage-writer-id"

// objectStore turns the storage section into the registry's object
// store, or nil for the filesystem backend.
func objectStore(cfg config.Config, dir, httpsAddr string) (*registry.S3, error) {
	if cfg.Storage.Backend != config.BackendS3 {
		return nil, nil
	}
	c := cfg.Storage.S3
	ak, sk, err := c.Credentials(os.Getenv)
	if err != nil {
		return nil, err
	}
	id, err := writerID(filepath.Join(dir, writerIDFile))
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	return &registry.S3{
		Endpoint: c.Endpoint, Region: c.Region, Bucket: c.Bucket, Prefix: c.Prefix,
		AccessKey: ak, SecretKey: sk, CAFile: c.CAFile, PathStyle: c.PathStyle,
		WriterID: id, Writer: fmt.Sprintf("the appliance on %s (https %s, data %s)", host, advertised(cfg, httpsAddr), dir),
		Replica: cfg.Role == config.RoleReplica,
	}, nil
}

func writerID(path string) (string, error) {
	data, err := os.ReadFile(path) //nolint:gosec // G304: a file of the data directory
	if err == nil {
		if id := strings.TrimSpace(string(data)); len(id) >= 16 {
			return id, nil
		}
		return "", fmt.Errorf("storage writer id %s: too short (corrupt?)", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("storage writer id: %w", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("storage writer id: %w", err)
	}
	id := hex.EncodeToString(b)
	if err := fsutil.WriteFileAtomic(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("storage writer id: %w", err)
	}
	return id, nil
}

// advertised is the writer's address as its lock object names it: the
// first configured host name with the bound port, else the bound address.
func advertised(cfg config.Config, httpsAddr string) string {
	_, port, err := net.SplitHostPort(httpsAddr)
	if len(cfg.Hostnames) == 0 || err != nil {
		return httpsAddr
	}
	return net.JoinHostPort(cfg.Hostnames[0], port)
}
