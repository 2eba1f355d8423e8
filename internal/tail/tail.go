// Package tail keeps the end of a stream in bounded memory: the newest
// bytes of a container's logs, of a command's output, however much was
// written.
package tail

import "strings"

// Buffer is an io.Writer that keeps the last Max bytes written to it.
type Buffer struct {
	Max     int
	buf     []byte
	dropped bool
}

// New returns a Buffer keeping max bytes.
func New(max int) *Buffer { return &Buffer{Max: max} }

// Write keeps the newest bytes; it never fails.
func (t *Buffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.Max {
		t.dropped = t.dropped || len(t.buf) > 0 || len(p) > t.Max
		t.buf = append(t.buf[:0], p[len(p)-t.Max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.Max; over > 0 {
		t.dropped = true
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// Dropped reports whether more was written than is kept.
func (t *Buffer) Dropped() bool { return t.dropped }

// String is what is kept, valid UTF-8, from its first whole line when some
// was dropped.
func (t *Buffer) String() string {
	b := t.buf
	if t.dropped {
		if i := strings.IndexByte(string(b), '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
