package ova

import (
	"time"

	"golang.org/x/sys/unix"
)

// lchtimes sets a file's access and modification times without following
// a symbolic link.
func lchtimes(path string, t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	return unix.Lutimes(path, []unix.Timeval{tv, tv})
}
