package actions

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

// LogCleanup deletes old files: regular files under the configured roots
// whose name matches a glob and that were last written more than
// older_than ago. It never leaves a root (symbolic links are neither
// followed nor deleted), and never deletes a file some process still has
// open for writing.
type LogCleanup struct {
	// ProcPath is /proc, where open files are found.
	ProcPath string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var _ engine.Executor = LogCleanup{}

// Permit implements engine.Executor: every root must be a directory, and
// none may lead into a system directory — checked again now, since a
// symbolic link may have changed since the configuration was loaded.
func (LogCleanup) Permit(_ context.Context, req engine.Request) error {
	for _, r := range req.Action.Roots {
		if d, sys := policy.SystemRoot(r); sys && !req.Action.UnsafeAllowSystemRoots {
			return &engine.Refusal{Severity: store.SeverityError, Reason: fmt.Sprintf("log cleanup: root %s leads into the system directory %s", r, d)}
		}
		fi, err := os.Stat(r)
		if err != nil {
			return &engine.Refusal{Severity: store.SeverityWarning, Reason: fmt.Sprintf("log cleanup: root %s: %v", r, err)}
		}
		if !fi.IsDir() {
			return &engine.Refusal{Severity: store.SeverityWarning, Reason: fmt.Sprintf("log cleanup: root %s is not a directory", r)}
		}
	}
	return nil
}

type fileID struct{ dev, ino uint64 }

// openForWriting returns the files some process has open for writing.
func openForWriting(procPath string) (map[fileID]bool, error) {
	open := map[fileID]bool{}
	pids, err := os.ReadDir(procPath)
	if err != nil {
		return nil, err
	}
	for _, p := range pids {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		fdDir := filepath.Join(procPath, p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, fd := range fds {
			info, err := os.ReadFile(filepath.Join(procPath, p.Name(), "fdinfo", fd.Name()))
			if err != nil || !writable(string(info)) {
				continue
			}
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(fdDir, fd.Name()), &st); err == nil {
				open[fileID{uint64(st.Dev), st.Ino}] = true
			}
		}
	}
	return open, nil
}

// writable reads the flags line of /proc/<pid>/fdinfo/<fd> (octal).
func writable(fdinfo string) bool {
	for _, line := range strings.Split(fdinfo, "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			return err == nil && flags&syscall.O_ACCMODE != syscall.O_RDONLY
		}
	}
	return false
}

// Execute implements engine.Executor.
func (a LogCleanup) Execute(ctx context.Context, req engine.Request) (engine.Result, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	procPath := a.ProcPath
	if procPath == "" {
		procPath = "/proc"
	}
	cutoff := now().Add(-req.Action.OlderThan.D())
	open, err := openForWriting(procPath)
	if err != nil {
		return engine.Result{}, fmt.Errorf("log cleanup: find open files: %w", err)
	}
	var removed []string
	var bytes int64
	skippedOpen, skippedLinks := 0, 0
	for _, root := range req.Action.Roots {
		real, err := filepath.EvalSymlinks(root)
		if err != nil {
			return engine.Result{}, fmt.Errorf("log cleanup: root %s: %w", root, err)
		}
		if d, sys := policy.SystemRoot(real); sys && !req.Action.UnsafeAllowSystemRoots {
			return engine.Result{}, fmt.Errorf("log cleanup: root %s leads into the system directory %s", root, d)
		}
		err = filepath.WalkDir(real, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // unreadable part of the tree: leave it
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if d.Type()&fs.ModeSymlink != 0 {
				skippedLinks++
				return nil
			}
			if !d.Type().IsRegular() || !matchesAny(req.Action.Patterns, d.Name()) {
				return nil
			}
			if path != real && !strings.HasPrefix(path, real+string(filepath.Separator)) {
				return nil // cannot happen with WalkDir; checked all the same
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(path, &st); err != nil || time.Unix(st.Mtim.Unix()).After(cutoff) {
				return nil
			}
			if open[fileID{uint64(st.Dev), st.Ino}] {
				skippedOpen++
				return nil
			}
			if err := os.Remove(path); err != nil {
				return nil
			}
			removed = append(removed, path)
			bytes += st.Size
			return nil
		})
		if err != nil {
			return engine.Result{}, fmt.Errorf("log cleanup of %s: %w", root, err)
		}
	}
	return engine.Result{Details: map[string]any{
		"files_removed": len(removed), "bytes_reclaimed": bytes, "removed": firstN(removed, 100),
		"skipped_open_for_writing": skippedOpen, "skipped_symlinks": skippedLinks,
	}}, nil
}

func matchesAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := filepath.Match(g, name); ok {
			return true
		}
	}
	return false
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
