package policy

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
)

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
