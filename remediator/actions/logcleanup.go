package actions

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
)

func init() {
	register("log_cleanup", newLogCleanupParams, func(d Deps) action.Executor { return LogCleanup{ProcPath: d.ProcPath} })
}

// DefaultLogCleanupAge is how old a file must be for log_cleanup to delete it.
const DefaultLogCleanupAge = 7 * 24 * time.Hour

// LogCleanupParams are log_cleanup's parameters: files under Roots whose
// name matches one of Patterns (shell globs) and that were last written
// more than OlderThan ago.
type LogCleanupParams struct {
	Roots     []string        `yaml:"roots"`
	Patterns  []string        `yaml:"patterns"`
	OlderThan action.Duration `yaml:"older_than"`
	// UnsafeAllowSystemRoots lets a root lie in a system directory (/etc,
	// /var/lib, …; see SystemRoot). Named to be seen in review.
	UnsafeAllowSystemRoots bool `yaml:"unsafe_allow_system_roots"`
}

func newLogCleanupParams() action.Params {
	return &LogCleanupParams{OlderThan: action.Duration(DefaultLogCleanupAge)}
}

// Problems implements action.Params.
func (p *LogCleanupParams) Problems() []string {
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	if len(p.Roots) == 0 {
		add("roots: needs at least one directory")
	}
	for _, r := range p.Roots {
		if !filepath.IsAbs(r) || filepath.Clean(r) == "/" {
			add("roots: %q must be an absolute directory other than /", r)
		} else if d, sys := SystemRoot(r); sys && !p.UnsafeAllowSystemRoots {
			add("roots: %q is in the system directory %s (set unsafe_allow_system_roots: true to allow it)", r, d)
		}
	}
	if len(p.Patterns) == 0 {
		add("patterns: needs at least one glob")
	}
	for _, g := range p.Patterns {
		if _, err := filepath.Match(g, ""); err != nil || strings.Contains(g, "/") {
			add("patterns: %q is not a file name glob", g)
		}
	}
	if p.OlderThan.D() < time.Hour {
		add("older_than: %s is less than an hour", p.OlderThan)
	}
	return probs
}

// systemDirectories are where log_cleanup never deletes, at any depth:
// the operating system, its configuration and state, and the kernel's
// filesystems. A root inside one of them is refused unless the action sets
// unsafe_allow_system_roots.
var systemDirectories = []string{
	"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
	"/root", "/run", "/sbin", "/sys", "/usr", "/var/lib", "/var/spool", "/var/mail",
}

// SystemRoot reports whether a log_cleanup root is, or is inside, a system
// directory, after resolving ".." and, where the path exists, symbolic
// links; it returns the system directory it falls in. The filesystem root
// itself is always one.
func SystemRoot(root string) (string, bool) {
	clean := filepath.Clean(root)
	if real, err := filepath.EvalSymlinks(clean); err == nil {
		clean = real
	} else if !errors.Is(err, fs.ErrNotExist) {
		return clean, true // cannot tell where it leads: treat it as unsafe
	}
	if clean == "/" {
		return "/", true
	}
	for _, d := range systemDirectories {
		if clean == d || strings.HasPrefix(clean, d+"/") {
			return d, true
		}
	}
	return "", false
}

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

var _ action.Executor = LogCleanup{}

// Permit implements action.Executor: every root must be a directory, and
// none may lead into a system directory — checked again now, since a
// symbolic link may have changed since the configuration was loaded.
func (LogCleanup) Permit(_ context.Context, req action.Request) error {
	p := paramsOf[*LogCleanupParams](req, newLogCleanupParams)
	for _, r := range p.Roots {
		if d, sys := SystemRoot(r); sys && !p.UnsafeAllowSystemRoots {
			return &action.Refusal{Severity: action.Error, Reason: fmt.Sprintf("log cleanup: root %s leads into the system directory %s", r, d)}
		}
		fi, err := os.Stat(r)
		if err != nil {
			return &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf("log cleanup: root %s: %v", r, err)}
		}
		if !fi.IsDir() {
			return &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf("log cleanup: root %s is not a directory", r)}
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

// Execute implements action.Executor.
func (a LogCleanup) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	procPath := a.ProcPath
	if procPath == "" {
		procPath = "/proc"
	}
	p := paramsOf[*LogCleanupParams](req, newLogCleanupParams)
	cutoff := now().Add(-p.OlderThan.D())
	open, err := openForWriting(procPath)
	if err != nil {
		return action.Result{}, fmt.Errorf("log cleanup: find open files: %w", err)
	}
	var removed []string
	var bytes int64
	skippedOpen, skippedLinks := 0, 0
	for _, root := range p.Roots {
		real, err := filepath.EvalSymlinks(root)
		if err != nil {
			return action.Result{}, fmt.Errorf("log cleanup: root %s: %w", root, err)
		}
		if d, sys := SystemRoot(real); sys && !p.UnsafeAllowSystemRoots {
			return action.Result{}, fmt.Errorf("log cleanup: root %s leads into the system directory %s", root, d)
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
			if !d.Type().IsRegular() || !matchesAny(p.Patterns, d.Name()) {
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
			return action.Result{}, fmt.Errorf("log cleanup of %s: %w", root, err)
		}
	}
	return action.Result{Details: map[string]any{
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
