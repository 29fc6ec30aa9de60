package benchkit

import (
	"encoding/json"
	"fmt"
	"os"
)

// WriteReport prints the Markdown report md to standard output and writes
// it to mdPath, and figures as indented JSON to jsonPath, each when set.
func WriteReport(md string, figures any, mdPath, jsonPath string) error {
	fmt.Print(md)
	if mdPath != "" {
		if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
			return fmt.Errorf("write the report: %w", err)
		}
	}
	if jsonPath != "" {
		// Figures JSON cannot encode (a NaN) leave the file empty, as
		// they always have, rather than fail a run whose report is out.
		js, _ := json.MarshalIndent(figures, "", "  ")
		if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
			return fmt.Errorf("write the figures: %w", err)
		}
	}
	return nil
}

// Dash formats v with one decimal, or as "–" when it is 0 (not measured).
func Dash(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", v)
}

// Verdict is a goal's "met" cell: "yes", or a bold "no".
func Verdict(met bool) string {
	if met {
		return "yes"
	}
	return "**no**"
}
