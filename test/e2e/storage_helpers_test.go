package e2e

import (
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// What a test sees of an appliance's registry storage, on the filesystem
// (under its data directory) or on S3 (in its bucket, under the prefix
// "appliance" that s3Env configures).

// layoutKey is a path of distribution's layout ("blobs/sha256/ab/<hex>/data").
func layoutKey(parts ...string) string {
	return path.Join(append([]string{"docker", "registry", "v2"}, parts...)...)
}

func blobKey(d string) string {
	hex := strings.TrimPrefix(d, "sha256:")
	return layoutKey("blobs", "sha256", hex[:2], hex, "data")
}

// blobStored tells whether the appliance stores blob d.
func blobStored(t *testing.T, a *appliance, d string) bool {
	t.Helper()
	if b := bucketOf(a.dataDir); b != "" {
		return ceph.Get(t).ObjectExists(t, b, "appliance/"+blobKey(d))
	}
	_, err := os.Stat(filepath.Join(a.dataDir, "registry", filepath.FromSlash(blobKey(d))))
	return err == nil
}

// corruptBlob changes the stored bytes of blob d behind the appliance's back.
func corruptBlob(t *testing.T, a *appliance, d string) {
	t.Helper()
	if b := bucketOf(a.dataDir); b != "" {
		ceph.Get(t).PutObject(t, b, "appliance/"+blobKey(d), []byte("not the blob any more"))
		return
	}
	flip(t, filepath.Join(a.dataDir, "registry", filepath.FromSlash(blobKey(d))))
}

// hasStaging tells whether an import's staging repository holds anything.
func hasStaging(t *testing.T, a *appliance) bool {
	t.Helper()
	key := layoutKey("repositories", "appliance-import-staging")
	if b := bucketOf(a.dataDir); b != "" {
		return ceph.Get(t).HasObjects(t, b, "appliance/"+key+"/")
	}
	ents, err := os.ReadDir(filepath.Join(a.dataDir, "registry", filepath.FromSlash(key)))
	return err == nil && len(ents) > 0
}

// storedBytes is what the appliance's registry storage holds, in bytes.
func storedBytes(t *testing.T, a *appliance) int64 {
	t.Helper()
	if b := bucketOf(a.dataDir); b != "" {
		return ceph.Get(t).BytesUnder(t, b, "appliance/docker/")
	}
	return treeBytes(t, filepath.Join(a.dataDir, "registry"))
}
