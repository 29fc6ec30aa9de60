package main

import (
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/aptrepo"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/server/aptapi"
)

func (c cmds) aptCmd() *cobra.Command {
	var f cli.ClientFlags
	cmd := &cobra.Command{
		Use:   "apt",
		Short: "Manage the appliance's signed apt repository (add, rm, rollback, ls, search, history)",
		Long: `Every change is published as a new signed snapshot, switched in atomically.
Deep-learning VMs get their configuration from http://APPLIANCE:8080/apt/cloud-init.yaml
(or /apt/REPO.sources for deb822).`,
	}
	f.Register(cmd)
	distPath := func(repo, dist string) string {
		return "/api/v1/apt/repos/" + url.PathEscape(repo) + "/" + url.PathEscape(dist)
	}

	var component string
	add := &cobra.Command{
		Use:   "add REPO DIST FILE.deb...",
		Short: "Add packages to a distribution (one publish for all files)",
		Args:  cobra.MinimumNArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var pub aptrepo.Publish
			q := url.Values{"component": {component}}
			if err := c.uploadDebs(cmd.Context(), cl, distPath(args[0], args[1])+"/packages?"+q.Encode(), args[2:], &pub); err != nil {
				return fmt.Errorf("add packages to %s %s: %w", args[0], args[1], err)
			}
			printPublish(c, pub)
			return nil
		},
	}
	add.Flags().StringVar(&component, "component", "main", "component (main, universe, ...)")

	var version string
	rm := &cobra.Command{
		Use:   "rm REPO DIST PACKAGE",
		Short: "Remove a package (every version, or --version)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var pub aptrepo.Publish
			path := distPath(args[0], args[1]) + "/packages/" + url.PathEscape(args[2])
			if version != "" {
				path += "?" + url.Values{"version": {version}}.Encode()
			}
			if err := cl.Do(cmd.Context(), http.MethodDelete, path, nil, &pub); err != nil {
				return fmt.Errorf("remove %s from %s %s: %w", args[2], args[0], args[1], err)
			}
			printPublish(c, pub)
			return nil
		},
	}
	rm.Flags().StringVar(&version, "version", "", "remove only this version")

	rollback := &cobra.Command{
		Use:   "rollback REPO DIST PUBLISH_ID",
		Short: "Serve an earlier publish again (see `apt history`)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var pub aptrepo.Publish
			if err := cl.Do(cmd.Context(), http.MethodPost, distPath(args[0], args[1])+"/rollback", aptapi.RollbackRequest{PublishID: args[2]}, &pub); err != nil {
				return fmt.Errorf("roll %s %s back to %s: %w", args[0], args[1], args[2], err)
			}
			printPublish(c, pub)
			return nil
		},
	}

	ls := &cobra.Command{
		Use:   "ls [REPO DIST]",
		Short: "List repositories and distributions, or the packages of one distribution",
		Args:  cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			if len(args) == 2 {
				var pkgs []aptrepo.Package
				if err := cl.Do(cmd.Context(), http.MethodGet, distPath(args[0], args[1])+"/packages", nil, &pkgs); err != nil {
					return fmt.Errorf("list packages: %w", err)
				}
				return printPackages(c, pkgs, false)
			}
			if len(args) == 1 {
				return fmt.Errorf("give both REPO and DIST, or neither")
			}
			var repos []aptrepo.RepoInfo
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/apt/repos", nil, &repos); err != nil {
				return fmt.Errorf("list apt repositories: %w", err)
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REPO\tDIST\tCOMPONENTS\tARCHITECTURES\tPACKAGES\tPUBLISH\tUPDATED")
			for _, r := range repos {
				for _, d := range r.Dists {
					var comps []string
					for _, cm := range d.Components {
						comps = append(comps, fmt.Sprintf("%s(%d)", cm.Name, cm.Packages))
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Name, d.Name, strings.Join(comps, " "), strings.Join(d.Architectures, ","), d.Packages, d.Current, d.Updated.Format("2006-01-02 15:04"))
				}
			}
			return tw.Flush()
		},
	}

	search := &cobra.Command{
		Use:   "search NAME",
		Short: "Find packages by name across repositories and distributions",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var pkgs []aptrepo.Package
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/apt/search?"+url.Values{"q": {args[0]}}.Encode(), nil, &pkgs); err != nil {
				return fmt.Errorf("search: %w", err)
			}
			return printPackages(c, pkgs, true)
		},
	}

	history := &cobra.Command{
		Use:   "history REPO DIST",
		Short: "List the publishes of a distribution (ids for rollback)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var pubs []aptrepo.Publish
			if err := cl.Do(cmd.Context(), http.MethodGet, distPath(args[0], args[1])+"/history", nil, &pubs); err != nil {
				return fmt.Errorf("history: %w", err)
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PUBLISH\tTIME\tBY\tACTION\tPACKAGES\tSTATE")
			for _, p := range pubs {
				state := "gone"
				switch {
				case p.Current:
					state = "current"
				case p.Kept:
					state = "kept"
				}
				action := p.Action
				if p.RollbackTo != "" {
					action += " to " + p.RollbackTo
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", p.ID, p.Time.Format("2006-01-02 15:04:05"), p.By, action, p.Packages, state)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(add, rm, rollback, ls, search, history)
	return cmd
}

// uploadDebs streams the files as one multipart/form-data body.
func (c cmds) uploadDebs(ctx context.Context, cl interface {
	Upload(ctx context.Context, path, contentType string, body io.Reader, size int64, out, failure any) error
}, path string, files []string, out any) error {
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return err
		}
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		err := func() error {
			for _, name := range files {
				part, err := mw.CreateFormFile("file", filepath.Base(name))
				if err != nil {
					return err
				}
				fh, err := os.Open(name)
				if err != nil {
					return err
				}
				_, err = io.Copy(part, fh)
				_ = fh.Close()
				if err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	return cl.Upload(ctx, path, mw.FormDataContentType(), pr, -1, out, nil)
}

func printPublish(c cmds, p aptrepo.Publish) {
	fmt.Fprintf(c.Stdout, "published %s %s as %s (%s): %d packages\n", p.Repo, p.Dist, p.ID, p.Action, p.Packages)
	for _, ch := range p.Changes {
		fmt.Fprintf(c.Stdout, "  %s\n", ch)
	}
}

func printPackages(c cmds, pkgs []aptrepo.Package, where bool) error {
	tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
	if where {
		fmt.Fprintln(tw, "REPO\tDIST\tCOMPONENT\tPACKAGE\tVERSION\tARCH\tSIZE")
	} else {
		fmt.Fprintln(tw, "COMPONENT\tPACKAGE\tVERSION\tARCH\tSIZE")
	}
	for _, p := range pkgs {
		if where {
			fmt.Fprintf(tw, "%s\t%s\t", p.Repo, p.Dist)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Component, p.Name, p.Version, p.Architecture, cli.HumanBytes(p.Size))
	}
	return tw.Flush()
}
