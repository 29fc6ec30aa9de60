package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/appliance-dev/appliance/internal/auth"
	"github.com/appliance-dev/appliance/internal/cli"
	"github.com/appliance-dev/appliance/internal/server"
)

func (c cmds) userCmd() *cobra.Command {
	var f cli.ClientFlags
	cmd := &cobra.Command{
		Use:   "user",
		Short: "Manage the users of a running appliance (add, set, passwd, rm, ls)",
	}
	f.Register(cmd)

	var (
		role, passwordFile string
		projects           []string
	)
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a user; without --new-password-file a random password is generated and printed once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			pw, generated, err := newPassword(passwordFile)
			if err != nil {
				return err
			}
			var u auth.User
			if err := cl.Do(cmd.Context(), http.MethodPost, "/api/v1/users", server.UserRequest{Name: args[0], Password: pw, Role: role, Projects: &projects}, &u); err != nil {
				return fmt.Errorf("add user %s: %w", args[0], err)
			}
			fmt.Fprintf(c.Stdout, "added user %s (role %s in %s)\n", u.Name, u.Role, projectsText(u))
			if generated {
				fmt.Fprintf(c.Stdout, "password: %s\n", pw)
			}
			return nil
		},
	}
	add.Flags().StringVar(&role, "role", string(auth.RoleDeveloper), "admin, developer (push and pull) or guest (pull, private projects too)")
	add.Flags().StringSliceVar(&projects, "projects", nil, "make the user a member of these projects only (the role holds there; elsewhere no more than anonymous); default: every project")

	var (
		setRole     string
		setProjects []string
		allProjects bool
	)
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Change a user's role and/or projects (admin only)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := server.UserRequest{Role: setRole}
			switch {
			case allProjects && cmd.Flags().Changed("projects"):
				return fmt.Errorf("set user %s: give --projects or --all-projects, not both", args[0])
			case allProjects:
				req.Projects = &[]string{}
			case cmd.Flags().Changed("projects"):
				if len(setProjects) == 0 {
					return fmt.Errorf("set user %s: --projects needs at least one project (--all-projects makes the role appliance-wide)", args[0])
				}
				req.Projects = &setProjects
			case setRole == "":
				return fmt.Errorf("set user %s: nothing to change: give --role, --projects or --all-projects", args[0])
			}
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var u auth.User
			if err := cl.Do(cmd.Context(), http.MethodPatch, "/api/v1/users/"+url.PathEscape(args[0]), req, &u); err != nil {
				return fmt.Errorf("set user %s: %w", args[0], err)
			}
			fmt.Fprintf(c.Stdout, "user %s: role %s in %s\n", u.Name, u.Role, projectsText(u))
			return nil
		},
	}
	set.Flags().StringVar(&setRole, "role", "", "the new role: admin, developer or guest")
	set.Flags().StringSliceVar(&setProjects, "projects", nil, "the projects the user is a member of, replacing its current ones")
	set.Flags().BoolVar(&allProjects, "all-projects", false, "make the role hold in every project")
	add.Flags().StringVar(&passwordFile, "new-password-file", "", "file holding the new user's password (first line)")

	var passwdFile string
	passwd := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Set a user's password; without --new-password-file a random one is generated and printed once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			pw, generated, err := newPassword(passwdFile)
			if err != nil {
				return err
			}
			if err := cl.Do(cmd.Context(), http.MethodPatch, "/api/v1/users/"+url.PathEscape(args[0]), server.UserRequest{Password: pw}, nil); err != nil {
				return fmt.Errorf("set password of %s: %w", args[0], err)
			}
			fmt.Fprintf(c.Stdout, "password of %s changed\n", args[0])
			if generated {
				fmt.Fprintf(c.Stdout, "password: %s\n", pw)
			}
			return nil
		},
	}
	passwd.Flags().StringVar(&passwdFile, "new-password-file", "", "file holding the new password (first line)")

	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			if err := cl.Do(cmd.Context(), http.MethodDelete, "/api/v1/users/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return fmt.Errorf("remove user %s: %w", args[0], err)
			}
			fmt.Fprintf(c.Stdout, "removed user %s\n", args[0])
			return nil
		},
	}

	ls := &cobra.Command{
		Use:   "ls",
		Short: "List users",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.Client(&f)
			if err != nil {
				return err
			}
			var users []auth.User
			if err := cl.Do(cmd.Context(), http.MethodGet, "/api/v1/users", nil, &users); err != nil {
				return fmt.Errorf("list users: %w", err)
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tPROJECTS\tCREATED\tUPDATED")
			for _, u := range users {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", u.Name, u.Role, projectsText(u), u.Created.Format("2006-01-02 15:04"), u.Updated.Format("2006-01-02 15:04"))
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(add, set, passwd, rm, ls)
	return cmd
}

// projectsText says where a user's role holds.
func projectsText(u auth.User) string {
	if u.Wide() {
		return "every project"
	}
	return strings.Join(u.Projects, ",")
}

// newPassword reads the password from file, or generates one.
func newPassword(file string) (pw string, generated bool, err error) {
	if file == "" {
		pw, err = auth.RandomPassword()
		return pw, true, err
	}
	pw, err = cli.ReadFirstLine(file, "new password")
	return pw, false, err
}
