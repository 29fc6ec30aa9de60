package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/apiclient"
	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/importer/history"
	"github.com/appliance-dev/appliance/internal/importer/tarstream"
	"github.com/appliance-dev/appliance/internal/server"
)

func (c cmds) importCmd() *cobra.Command {
	var (
		f         cli.ClientFlags
		toRepo    string
		keepNames bool
		onServer  bool
		unsigned  bool
	)
	cmd := &cobra.Command{
		Use:   "import [--to-repo PROJECT/REPO] FILE...",
		Short: "Import imgpkg tars, OCI layouts (folders or tars, plain, gzip or zstd), docker-save tars and appliance bundles",
		Long: `Import what crossed the gap into the running appliance. The format is
recognised from the content. Every byte is verified before anything becomes
visible; tags are applied last. An imgpkg tar lands exactly as
"imgpkg copy --tar FILE --to-repo PROJECT/REPO" would leave it.

An appliance bundle (appliance bundle create) needs no --to-repo: its signed
inventory names every destination. It is refused unless signed by a key in
the appliance's trust.keys (or imported with --allow-unsigned, which the
history records). A bundle split for media is imported by naming OUT, with
OUT.001... and OUT.parts.json beside it; a damaged part is named.

Files are streamed to the appliance. With --on-server, FILE is a path on the
appliance's own disk (mounted media) and nothing is uploaded.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			failed := 0
			for _, arg := range args {
				var rec history.Record
				if onServer {
					// As long as the import takes: a time-out here would
					// cancel the import on the appliance.
					err = cl.DoLong(cmd.Context(), http.MethodPost, "/api/v1/imports", server.ImportPathRequest{Path: arg, ToRepo: toRepo, KeepNames: keepNames, AllowUnsigned: unsigned}, &rec)
				} else {
					err = c.upload(cmd.Context(), cl, arg, uploadOptions{toRepo: toRepo, keepNames: keepNames, allowUnsigned: unsigned}, &rec)
				}
				if err != nil {
					failed++
					fmt.Fprintf(c.Stderr, "import %s: %v\n", arg, err)
					continue
				}
				printRecord(c.Stdout, rec)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d imports failed", failed, len(args))
			}
			return nil
		},
	}
	f.Register(cmd)
	cmd.Flags().StringVar(&toRepo, "to-repo", "", "destination repository, PROJECT/REPO (with --keep-names: an optional prefix)")
	cmd.Flags().BoolVar(&keepNames, "keep-names", false, "keep the repository paths the archive names (OCI layouts, docker-save), without their registry host")
	cmd.Flags().BoolVar(&onServer, "on-server", false, "FILE is a path on the appliance's disk; nothing is uploaded")
	cmd.Flags().BoolVar(&unsigned, "allow-unsigned", false, "accept an unsigned appliance bundle (recorded in the import history)")
	return cmd
}

// upload streams one file (or an OCI layout folder, as a tar) with progress.
type uploadOptions struct {
	toRepo                   string
	keepNames, allowUnsigned bool
}

func (c cmds) upload(ctx context.Context, cl *apiclient.Client, path string, o uploadOptions, rec *history.Record) error {
	var (
		body io.Reader
		size = int64(-1)
	)
	if list, _, _, lerr := bundle.ReadPartsList(path); lerr == nil {
		// A bundle split for media: every part is checked first (a damaged
		// one is named), then they stream as one.
		r, _, err := bundle.Open(path, bundle.Trust{AnySigner: true})
		if err != nil {
			return err
		}
		defer r.Close()
		return c.send(ctx, cl, path, r, list.Size, o, rec)
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if info.IsDir() {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(tarstream.TarFolder(ctx, path, pw)) }()
		defer pr.Close()
		body = pr
	} else {
		file, err := os.Open(path)
		if err != nil {
			return err
		}
		defer file.Close()
		body, size = file, info.Size()
	}
	if size == 0 {
		return errors.New("the file is empty")
	}
	return c.send(ctx, cl, path, body, size, o, rec)
}

// send streams one import body with progress.
func (c cmds) send(ctx context.Context, cl *apiclient.Client, path string, body io.Reader, size int64, o uploadOptions, rec *history.Record) error {
	q := url.Values{"to_repo": {o.toRepo}, "source": {filepath.Base(path)}}
	if o.keepNames {
		q.Set("keep_names", "true")
	}
	if o.allowUnsigned {
		q.Set("allow_unsigned", "true")
	}
	p := cli.NewProgress(c.Stderr, filepath.Base(path), size)
	var failure server.ImportFailure
	err := cl.Upload(ctx, "/api/v1/imports?"+q.Encode(), "application/octet-stream", p.Reader(body), size, rec, &failure)
	p.Finish()
	return err
}

func printRecord(w io.Writer, r history.Record) {
	fmt.Fprintf(w, "imported %s (%s, sha256 %s) as import %s\n", r.Source, r.Format, r.SourceSHA256, r.ID)
	fmt.Fprintf(w, "  blobs: %d new (%s), %d already present (%s)\n", r.BlobsNew, cli.HumanBytes(r.BytesNew), r.BlobsExisting, cli.HumanBytes(r.BytesExisting))
	for _, t := range r.Tags {
		moved := ""
		if t.Previous != "" {
			moved = " (moved from " + t.Previous + ")"
		}
		fmt.Fprintf(w, "  %s:%s → %s%s\n", t.Repository, t.Tag, t.Digest, moved)
	}
	if b := r.Bundle; b != nil {
		switch {
		case b.Signed:
			fmt.Fprintf(w, "  bundle %q signed by %s (%s)\n", b.Name, b.Fingerprint, b.SignedBy)
		default:
			fmt.Fprintf(w, "  bundle %q UNSIGNED, accepted with --allow-unsigned\n", b.Name)
		}
		for _, f := range b.Files {
			fmt.Fprintf(w, "  file %s\n", f)
		}
		for _, p := range b.Packages {
			fmt.Fprintf(w, "  apt %s\n", p)
		}
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
}

func (c cmds) importsCmd() *cobra.Command {
	var f cli.ClientFlags
	cmd := &cobra.Command{
		Use:   "imports [ID]",
		Short: "List the import history, or show one import",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				var r history.Record
				if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/imports/"+url.PathEscape(args[0]), nil, &r); err != nil {
					return fmt.Errorf("show import %s: %w", args[0], err)
				}
				fmt.Fprintf(c.Stdout, "import %s: %s by %s, %s → %s\n", r.ID, r.Outcome, r.User, r.Started.Format("2006-01-02 15:04:05Z07:00"), r.Finished.Format("15:04:05"))
				if r.Error != "" {
					fmt.Fprintf(c.Stdout, "  error: %s\n", r.Error)
				}
				printRecord(c.Stdout, r)
				return nil
			}
			var recs []history.Record
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/imports", nil, &recs); err != nil {
				return fmt.Errorf("list imports: %w", err)
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTARTED\tBY\tSOURCE\tFORMAT\tOUTCOME\tREPOSITORIES\tTAGS\tNEW\tPRESENT")
			for _, r := range recs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.Started.Format("2006-01-02 15:04"), r.User, r.Source,
					cli.Dash(r.Format), r.Outcome, cli.Dash(strings.Join(r.Repositories, ",")), len(r.Tags), cli.HumanBytes(r.BytesNew), cli.HumanBytes(r.BytesExisting))
			}
			return tw.Flush()
		},
	}
	f.Register(cmd)
	return cmd
}
