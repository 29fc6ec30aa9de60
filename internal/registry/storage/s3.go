package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	s3driver "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// S3 is an S3-compatible object store (Ceph's RADOS Gateway, MinIO, AWS)
// that holds the registry's content, through distribution's own S3
// driver with redirects off: clients only ever talk to the appliance.
type S3 struct {
	Endpoint  string // http(s)://host[:port]
	Region    string
	Bucket    string // must exist
	Prefix    string // key prefix of everything this appliance keeps
	AccessKey string
	SecretKey string
	// CAFile verifies an https endpoint (a PEM bundle); the AWS SDK reads
	// it through AWS_CA_BUNDLE, a process-wide setting.
	CAFile    string
	PathStyle bool
	// WriterID identifies this appliance in the bucket's lock object (a
	// value kept in its data directory): a second appliance that would
	// write the same bucket and prefix is refused. Writer describes it to
	// the operator who reads that refusal (host name, address).
	WriterID, Writer string
	// Replica opens the store as a read-only replica of the appliance
	// whose lock object is there (the registry's replica.go): the lock is read, never
	// written, and the driver refuses every write.
	Replica bool
}

// LockKey is the driver key of the lock object naming the appliance that
// writes a bucket (under the configured prefix).
const LockKey = "/appliance/writer.lock"

// Errors of an object store that is not usable, each named at start-up.
var (
	// ErrStoreUnreachable: nothing answers at the endpoint.
	ErrStoreUnreachable = errors.New("object store unreachable")
	// ErrStoreCredentials: the store refused the access key or signature.
	ErrStoreCredentials = errors.New("object store refused the credentials")
	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("bucket does not exist")
	// ErrWriterLocked: another appliance writes this bucket and prefix.
	ErrWriterLocked = errors.New("another appliance writes this bucket")
	// ErrNoWriter marks a replica started on a bucket no writer holds.
	ErrNoWriter = errors.New("no writer holds this bucket")
)

// s3Parameters are the S3 driver's parameters for o; they hold the
// credentials, so they are never logged.
func (o *S3) parameters() (map[string]any, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("s3 endpoint %q: want http(s)://host[:port]", o.Endpoint)
	}
	if o.Bucket == "" || o.Region == "" || o.AccessKey == "" || o.SecretKey == "" || o.WriterID == "" {
		return nil, errors.New("s3: endpoint, region, bucket, credentials and writer are required")
	}
	root := "/"
	if p := strings.Trim(o.Prefix, "/"); p != "" {
		root = "/" + p
	}
	return map[string]any{
		"accesskey":      o.AccessKey,
		"secretkey":      o.SecretKey,
		"region":         o.Region,
		"regionendpoint": strings.TrimRight(o.Endpoint, "/"),
		"bucket":         o.Bucket,
		"rootdirectory":  root,
		"forcepathstyle": o.PathStyle,
		"secure":         u.Scheme == "https",
		"v4auth":         true,
		"encrypt":        false,
	}, nil
}

var caBundleMu sync.Mutex

// useCABundle points the AWS SDK at file, which it reads when a session
// is made. The setting is process-wide (the SDK offers the S3 driver no
// other way); two stores that want different bundles are refused.
func useCABundle(file string) error {
	if file == "" {
		return nil
	}
	caBundleMu.Lock()
	defer caBundleMu.Unlock()
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("s3 ca_file: %w", err)
	}
	if cur := os.Getenv("AWS_CA_BUNDLE"); cur != "" && cur != file {
		return fmt.Errorf("s3 ca_file %s: AWS_CA_BUNDLE already names %s", file, cur)
	}
	return os.Setenv("AWS_CA_BUNDLE", file)
}

// OpenS3 makes the S3 driver and checks the store before anything is
// written: it answers, takes the credentials, holds the bucket, and no
// other appliance's lock object is there. It then writes this writer's
// lock (or finds its own). A replica instead reads the lock, which must
// be there, and gets a driver that refuses every write; writer is then
// the description of the appliance that holds the lock.
func OpenS3(ctx context.Context, o *S3) (_ storagedriver.StorageDriver, _ map[string]any, writer string, _ error) {
	params, err := o.parameters()
	if err != nil {
		return nil, nil, "", err
	}
	if err := useCABundle(o.CAFile); err != nil {
		return nil, nil, "", err
	}
	d, err := s3driver.FromParameters(ctx, params)
	if err != nil {
		return nil, nil, "", fmt.Errorf("s3 driver: %w", err)
	}
	if o.Replica {
		l, err := ReadLock(ctx, d, o)
		if err != nil {
			return nil, nil, "", err
		}
		if l == nil {
			return nil, nil, "", fmt.Errorf("%w: %s has no lock object %s: start its writer first (role writer), then the replicas",
				ErrNoWriter, storeName(o), LockObject(o))
		}
		return ReadOnlyDriver{StorageDriver: d}, params, l.Describe(), nil
	}
	if err := takeLock(ctx, d, o); err != nil {
		return nil, nil, "", err
	}
	return d, params, "", nil
}

// WriterLock is the lock object's content.
type WriterLock struct {
	ID     string    `json:"id"`
	Writer string    `json:"writer"`
	Since  time.Time `json:"since"`
}

// Describe names the lock's holder for an operator.
func (l *WriterLock) Describe() string { return fmt.Sprintf("%s, id %s", l.Writer, l.ID) }

// storeName names a bucket and prefix for an operator.
func storeName(o *S3) string {
	where := fmt.Sprintf("bucket %q at %s", o.Bucket, o.Endpoint)
	if o.Prefix != "" {
		where += fmt.Sprintf(" (prefix %q)", o.Prefix)
	}
	return where
}

// ReadLock reads the lock object: nil when there is none.
func ReadLock(ctx context.Context, d storagedriver.StorageDriver, o *S3) (*WriterLock, error) {
	where := storeName(o)
	data, err := d.GetContent(ctx, LockKey)
	var nf storagedriver.PathNotFoundError
	if errors.As(err, &nf) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("s3 %s: %w", where, classify(err, o))
	}
	var l WriterLock
	if err := json.Unmarshal(data, &l); err != nil || l.ID == "" {
		return nil, fmt.Errorf("s3 %s: lock object %s is not an appliance's lock: %q", where, LockObject(o), data)
	}
	return &l, nil
}

func takeLock(ctx context.Context, d storagedriver.StorageDriver, o *S3) error {
	where := storeName(o)
	read := func() (*WriterLock, error) { return ReadLock(ctx, d, o) }
	l, err := read()
	if err != nil {
		return err
	}
	if l == nil {
		data, err := json.Marshal(WriterLock{ID: o.WriterID, Writer: o.Writer, Since: time.Now().UTC()})
		if err != nil {
			return err
		}
		if err := d.PutContent(ctx, LockKey, data); err != nil {
			return fmt.Errorf("s3 %s: write lock object: %w", where, classify(err, o))
		}
		// Read it back: of two appliances that started together, the one
		// whose write came last holds the lock and the other is refused.
		if l, err = read(); err != nil {
			return err
		}
		if l == nil {
			return fmt.Errorf("s3 %s: the lock object %s vanished after it was written", where, LockObject(o))
		}
	}
	if l.ID != o.WriterID {
		return fmt.Errorf("%w: %s is written by %s, id %s (since %s); if that appliance is gone for good, delete the lock object %s",
			ErrWriterLocked, where, l.Writer, l.ID, l.Since.Format(time.RFC3339), LockObject(o))
	}
	return nil
}

// LockObject is the lock object's key in the bucket, for an operator.
func LockObject(o *S3) string {
	p := strings.Trim(o.Prefix, "/")
	if p != "" {
		p += "/"
	}
	return p + strings.TrimPrefix(LockKey, "/")
}

// classify names what is wrong with the store from the driver's error.
// The driver wraps the SDK's errors in a storagedriver.Error, which does
// not unwrap.
func classify(err error, o *S3) error {
	cause := err
	var de storagedriver.Error
	if errors.As(err, &de) && de.Detail != nil {
		cause = de.Detail
	}
	var coded interface{ Code() string }
	if errors.As(cause, &coded) {
		switch coded.Code() {
		case "NoSuchBucket":
			return fmt.Errorf("%w: %q (create it first: the appliance never creates buckets)", ErrNoBucket, o.Bucket)
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken":
			return fmt.Errorf("%w (%s): check storage.s3.access_key_file and secret_key_file", ErrStoreCredentials, coded.Code())
		case "RequestError":
			// The SDK's wrapper of a failed connection (it does not unwrap).
			return fmt.Errorf("%w at %s: %w", ErrStoreUnreachable, o.Endpoint, cause)
		default:
			return cause
		}
	}
	var ne net.Error
	var oe *net.OpError
	var ue *url.Error
	if errors.As(cause, &oe) || errors.As(cause, &ne) || errors.As(cause, &ue) {
		return fmt.Errorf("%w at %s: %w", ErrStoreUnreachable, o.Endpoint, cause)
	}
	return cause
}
