// Batch: a Celery-style batch job. Submit many independent tasks, collect
// the results as they finish, and show progress on the terminal.
//
//	go run ./examples/batch -jobs 200
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/goray/goray/objectstore"
	"github.com/goray/goray/runtime"
	"github.com/goray/goray/task"
)

// countPrimes counts the primes below n: a small CPU-bound job.
func countPrimes(_ context.Context, n int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("countPrimes: n must be >= 0, got %d", n)
	}
	count := 0
	for i := 2; i < n; i++ {
		prime := true
		for d := 2; d*d <= i; d++ {
			if i%d == 0 {
				prime = false
				break
			}
		}
		if prime {
			count++
		}
	}
	return count, nil
}

var primes = task.Register1("batch.count_primes", countPrimes)

func main() {
	jobs := flag.Int("jobs", 200, "number of tasks to submit")
	size := flag.Int("size", 100_000, "each task counts the primes below size+i")
	flag.Parse()
	if err := run(context.Background(), *jobs, *size, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "batch:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, jobs, size int, out io.Writer) error {
	if err := runtime.Init(ctx); err != nil {
		return err
	}
	defer runtime.Shutdown()
	if jobs < 1 || size < 0 {
		return fmt.Errorf("need -jobs >= 1 and -size >= 0, got -jobs %d -size %d", jobs, size)
	}

	start := time.Now()
	pending := make([]objectstore.Ref[int], jobs)
	index := map[string]int{}
	for i := range pending {
		pending[i] = primes.Remote(ctx, objectstore.Val(size+i))
		index[pending[i].ID()] = i
	}
	fmt.Fprintf(out, "submitted %d tasks\n", jobs)

	results := make([]int, jobs)
	done := 0
	bar := newProgress(out, jobs)
	for len(pending) > 0 {
		ready, rest, err := objectstore.Wait(ctx, pending, 1)
		if err != nil {
			return err
		}
		for _, r := range ready {
			v, err := r.Get(ctx)
			if err != nil {
				return fmt.Errorf("task %d: %w", index[r.ID()], err)
			}
			results[index[r.ID()]] = v
			done++
		}
		pending = rest
		bar.update(done)
	}

	// Check every result against a local computation of a few of them.
	for _, i := range []int{0, jobs / 2, jobs - 1} {
		want, _ := countPrimes(ctx, size+i)
		if results[i] != want {
			return fmt.Errorf("task %d: got %d primes, want %d", i, results[i], want)
		}
	}
	fmt.Fprintf(out, "done: %d tasks in %s; primes below %d: %d, below %d: %d\n",
		jobs, time.Since(start).Round(time.Millisecond), size, results[0], size+jobs-1, results[jobs-1])
	return nil
}

// progress shows how far the batch is: a bar redrawn in place on a
// terminal (at most every 100 ms), a line per 10% elsewhere (logs, pipes).
type progress struct {
	out      io.Writer
	total    int
	tty      bool
	start    time.Time
	last     time.Time
	lastTens int
}

func newProgress(out io.Writer, total int) *progress {
	tty := false
	if f, ok := out.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{out: out, total: total, tty: tty, start: time.Now()}
}

func (p *progress) update(done int) {
	now := time.Now()
	rate := float64(done) / max(now.Sub(p.start).Seconds(), 1e-9)
	if !p.tty {
		if tens := done * 10 / p.total; tens > p.lastTens || done == p.total {
			p.lastTens = tens
			fmt.Fprintf(p.out, "progress: %d/%d tasks (%d%%), %.0f tasks/s\n", done, p.total, done*100/p.total, rate)
		}
		return
	}
	if done < p.total && now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	const width = 30
	filled := done * width / p.total
	fmt.Fprintf(p.out, "\r[%s%s] %d/%d tasks  %.0f/s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, p.total, rate)
	if done == p.total {
		fmt.Fprintln(p.out)
	}
}
