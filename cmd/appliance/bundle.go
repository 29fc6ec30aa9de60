package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/bundle"
	"github.com/appliance-dev/appliance/internal/bundler"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/fsutil"
	"github.com/appliance-dev/appliance/internal/version"
)

func (c cmds) bundleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Build transfer bundles on the connected side, and verify them on either side",
	}
	cmd.AddCommand(c.bundleCreateCmd(), c.bundleVerifyCmd())
	return cmd
}

func (c cmds) bundleCreateCmd() *cobra.Command {
	var (
		specFile, out, keyFile, split, since, cacheDir string
		receiptKeys, caFiles, insecure                 []string
		parallel                                       int
	)
	cmd := &cobra.Command{
		Use:   "create -f SPEC.yaml -o OUT [--key FILE] [--split SIZE] [--since RECEIPT]",
		Short: "Fetch what a bundle spec lists and write it as one signed bundle",
		Long: `Runs on the internet-connected jump host; needs no appliance. Fetches the
images (with their cosign signatures, attestations, SBOMs and OCI referrers),
imgpkg bundles, files and apt packages the spec lists into a download cache
(--cache, reused by the next run, so an interrupted run resumes), verifies
every digest, and writes OUT: a tar holding the signed inventory.json first,
then an OCI image layout of every blob (docs/bundle-format.md).

--split SIZE writes OUT.001, OUT.002, ... and OUT.parts.json (signed with
--key) instead. --since RECEIPT (from "appliance receipt" in the enclave)
leaves out everything the enclave already holds.

Credentials come from the usual files (~/.docker/config.json,
$REGISTRY_AUTH_FILE, podman's auth.json). Registries must present a
certificate the system's CAs or --ca FILE trust; plain HTTP and unverified
TLS are used only for hosts named with --insecure-registry.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if specFile == "" || out == "" {
				return errors.New("give the spec with -f and the output with -o")
			}
			sf, err := os.Open(specFile)
			if err != nil {
				return fmt.Errorf("read spec: %w", err)
			}
			spec, err := bundle.ParseSpec(sf)
			_ = sf.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", specFile, err)
			}
			o := bundler.Options{Spec: spec, SpecDir: filepath.Dir(specFile), Out: out, CacheDir: cacheDir, CAFiles: caFiles,
				Insecure: insecure, Parallel: parallel, Tool: "appliance " + version.Get().Version, Log: c.Logger()}
			if split != "" {
				if o.SplitSize, err = bundle.ParseSize(split); err != nil {
					return fmt.Errorf("--split: %w", err)
				}
			}
			if keyFile != "" {
				if o.Signer, err = bundle.LoadSigner(keyFile); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(c.Stderr, "warning: no --key: the bundle is unsigned, and appliances refuse it unless imported with --allow-unsigned")
			}
			if since != "" {
				pinned, err := bundle.LoadTrustedKeys(receiptKeys)
				if err != nil {
					return err
				}
				var fp string
				if o.Since, fp, o.SinceSum, err = bundle.ReadReceipt(since, pinned); err != nil {
					return err
				}
				fmt.Fprintf(c.Stderr, "delta against receipt %s of %s (%s, signed by %s)\n", since, o.Since.Appliance, o.Since.Created.Format("2006-01-02 15:04Z07:00"), fp)
			}
			pr := &phaseProgress{w: c.Stderr}
			o.Progress = pr
			res, err := bundler.Create(cmd.Context(), o)
			pr.finish()
			if err != nil {
				return fmt.Errorf("bundle create: %w", err)
			}
			kinds := map[string]int{}
			for _, a := range res.Inventory.Artifacts {
				kinds[a.Kind]++
			}
			fmt.Fprintf(c.Stdout, "wrote %s: %d artifacts (%s), %d blobs, %s\n", strings.Join(res.Files, ", "), len(res.Inventory.Artifacts), kindList(kinds), len(res.Inventory.Blobs), cli.HumanBytes(res.Bytes))
			if res.Skipped > 0 {
				fmt.Fprintf(c.Stdout, "delta: %d blobs the enclave holds were left out\n", res.Skipped)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&specFile, "file", "f", "", "the bundle spec (see configs/bundle-spec.yaml)")
	fl.StringVarP(&out, "output", "o", "", "the bundle file to write")
	fl.StringVar(&keyFile, "key", "", "private key that signs the inventory (appliance key generate)")
	fl.StringVar(&split, "split", "", "write parts of at most SIZE (e.g. 4G, 700MiB) and a signed parts list")
	fl.StringVar(&since, "since", "", "receipt of the enclave (appliance receipt): carry only what it lacks")
	fl.StringArrayVar(&receiptKeys, "receipt-key", nil, "public key the receipt must be signed with (the enclave's receipt.pub; repeatable)")
	fl.StringVar(&cacheDir, "cache", "", "download cache, kept between runs (default OUT.cache)")
	fl.StringArrayVar(&caFiles, "ca", nil, "extra CA certificate (PEM) for upstream registries and servers (repeatable)")
	fl.StringArrayVar(&insecure, "insecure-registry", nil, "host[:port] reached over plain HTTP or unverified TLS (repeatable)")
	fl.IntVar(&parallel, "parallel", 8, "concurrent downloads")
	return cmd
}

func kindList(m map[string]int) string {
	var parts []string
	for _, k := range []string{bundle.KindImage, bundle.KindBundle, bundle.KindFile, bundle.KindApt} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
		}
	}
	return strings.Join(parts, ", ")
}

func (c cmds) bundleVerifyCmd() *cobra.Command {
	var (
		keys          []string
		allowUnsigned bool
		asJSON        bool
		inventoryOut  string
	)
	cmd := &cobra.Command{
		Use:   "verify OUT [--key PUBLIC.pem]...",
		Short: "Check a bundle without importing it: signature, parts, every blob's hash",
		Long: `Reads the whole bundle (OUT, or its parts beside OUT.parts.json) and checks
the parts' sums (naming any damaged part), the inventory's signature, and
every blob's size and sha256 against the inventory; then prints what the
bundle holds. With --key, the signature must be by one of those keys; without,
any valid signature is accepted and its key's fingerprint printed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			trusted, err := bundle.LoadTrustedKeys(keys)
			if err != nil {
				return err
			}
			trust := bundle.Trust{Keys: trusted, AllowUnsigned: allowUnsigned, AnySigner: len(trusted) == 0}
			r, parts, err := bundle.Open(args[0], trust)
			if err != nil {
				return fmt.Errorf("verify %s: %w", args[0], err)
			}
			defer r.Close()
			var size int64 = -1
			if fi, err := os.Stat(args[0]); err == nil {
				size = fi.Size()
			}
			p := cli.NewProgress(c.Stderr, filepath.Base(args[0]), size)
			sum, err := bundle.VerifyArchive(cmd.Context(), p.Reader(r), trust)
			p.Finish()
			if err != nil {
				return fmt.Errorf("verify %s: %w", args[0], err)
			}
			sum.Parts = parts
			if inventoryOut != "" {
				data, err := sum.Inventory.Marshal()
				if err != nil {
					return err
				}
				if err := fsutil.WriteFileAtomic(inventoryOut, data, 0o644); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(c.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(sum)
			}
			printSummary(c.Stdout, args[0], sum)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, "public key the bundle must be signed with (repeatable)")
	cmd.Flags().BoolVar(&allowUnsigned, "allow-unsigned", false, "accept an unsigned bundle")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary and inventory as JSON")
	cmd.Flags().StringVar(&inventoryOut, "inventory", "", "also write the verified inventory.json to this file")
	return cmd
}

func printSummary(w io.Writer, name string, s *bundle.Summary) {
	fmt.Fprintf(w, "%s: OK\n", name)
	if s.Name != "" {
		fmt.Fprintf(w, "  name:      %s\n", s.Name)
	}
	fmt.Fprintf(w, "  created:   %s by %s\n", s.Created, s.Tool)
	switch {
	case !s.Signed:
		fmt.Fprintf(w, "  signature: none (unsigned)\n")
	default:
		fmt.Fprintf(w, "  signature: valid, %s (%s)\n", s.Fingerprint, s.SignedBy)
	}
	if s.Parts > 0 {
		fmt.Fprintf(w, "  parts:     %d, all match the parts list\n", s.Parts)
	}
	if s.Since != "" {
		fmt.Fprintf(w, "  delta:     against receipt %s; relies on %d blobs the enclave holds\n", s.Since, s.Present)
	}
	fmt.Fprintf(w, "  blobs:     %d, %s, every sha256 verified\n", s.Blobs, cli.HumanBytes(s.Bytes))
	for _, a := range s.Inventory.Artifacts {
		extra := ""
		if a.Version != "" {
			extra += " version " + a.Version
		}
		if a.Refresh != "" {
			extra += " (refresh: " + a.Refresh + ")"
		}
		kind := a.Kind
		if a.FileKind != "" {
			kind += "/" + a.FileKind
		}
		fmt.Fprintf(w, "  %-18s %s → %s %s%s\n", kind, a.Source, a.Destination, a.Digest, extra)
		for _, r := range a.Related {
			tag := ""
			if r.Tag != "" {
				tag = " :" + r.Tag
			}
			fmt.Fprintf(w, "    + %s %s%s\n", r.Kind, r.Digest, tag)
		}
	}
}

func (c cmds) receiptCmd() *cobra.Command {
	var (
		f   cli.ClientFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "receipt -o FILE",
		Short: "Export a signed list of what the appliance holds, for bundle create --since",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("give the output file with -o")
			}
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/receipt", nil, &raw); err != nil {
				return fmt.Errorf("receipt: %w", err)
			}
			if err := fsutil.WriteFileAtomic(out, append([]byte(raw), '\n'), 0o644); err != nil {
				return fmt.Errorf("receipt: %w", err)
			}
			r, fp, _, err := bundle.ReadReceipt(out, nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.Stdout, "wrote %s: %d blobs, %d tags, %d files, %d apt packages; signed by %s\n", out, len(r.Blobs), len(r.Tags), len(r.Files), len(r.Packages), fp)
			return nil
		},
	}
	f.Register(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "where to write the receipt")
	return cmd
}

// phaseProgress shows the bundler's phases (download, write) as bars.
type phaseProgress struct {
	w   io.Writer
	cur *cli.Progress
}

func (p *phaseProgress) Phase(name string, total int64) {
	p.finish()
	if total <= 0 {
		return
	}
	p.cur = cli.NewProgress(p.w, name, total)
}

func (p *phaseProgress) Add(n int64) {
	if p.cur != nil {
		p.cur.Add(n)
	}
}

func (p *phaseProgress) finish() {
	if p.cur != nil {
		p.cur.Finish()
		p.cur = nil
	}
}
