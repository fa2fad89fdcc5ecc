package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	goruntime "runtime"
	"strings"
	"text/tabwriter"
)

func writeJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

func writeTable(w io.Writer, results []Result, cfg Config) error {
	where := "embedded cluster: two raylet processes on loopback"
	if cfg.Address != "" {
		where = "cluster at " + cfg.Address
	}
	mode := "4 trials of ≥ 2 s after a 1 s warm-up"
	if cfg.Quick {
		mode = "quick: 1 trial of 0.5 s, small sizes"
	}
	fmt.Fprintf(w, "goray bench — %d CPUs, %s; %s; mean ± std\n\n", goruntime.NumCPU(), where, mode)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tvalue\t± std\tunit\tratio\tto baseline\tgoal\tRay 2.21\t")
	for _, r := range results {
		value, std, ratio, ray := "-", "", "", ""
		if r.Available() {
			value, std = human(r.Value), human(r.Std)
		}
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.3f", r.Ratio)
		}
		if r.Ray > 0 {
			ray = human(r.Ray)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Name, value, std, r.Unit, ratio, r.Baseline, r.Goal, ray)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, r := range results {
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("  %s: %s", r.Name, r.Note))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n%s\n", strings.Join(notes, "\n"))
	}
	return nil
}

// human formats a figure with three significant digits and thousands
// separators.
func human(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		s := fmt.Sprintf("%.0f", v)
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
