package app

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/result"
)

// dirStore is the Store of `lr-relay fetch --output DIR`: content too large to go inline streams into a
// temporary file in DIR instead of the Object Store, so a file of any size is written without being held in
// memory. Fetch then gives each file its final name (saveResult).
type dirStore struct {
	dir string

	mu    sync.Mutex
	temps []string
}

func (d *dirStore) Opener(_ context.Context, _ string, _ map[string]string) artifact.Opener {
	return func() (artifact.Sink, error) {
		f, err := os.CreateTemp(d.dir, ".lr-relay-fetch-*.partial")
		if err != nil {
			return nil, fmt.Errorf("--output: %w", err)
		}
		d.mu.Lock()
		d.temps = append(d.temps, f.Name())
		d.mu.Unlock()
		return &fileSink{f: f, bw: bufio.NewWriterSize(f, 128<<10), h: sha256.New(), dir: d.dir}, nil
	}
}

// cleanup removes the temporary files that did not become a result's file (a command that failed after its
// content was written).
func (d *dirStore) cleanup() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, name := range d.temps {
		_ = os.Remove(name)
	}
	d.temps = nil
}

// Lookup finds nothing: every fetch downloads afresh.
func (*dirStore) Lookup(context.Context, string) (*result.ObjectRef, map[string]string, bool, error) {
	return nil, nil, false, nil
}

func (*dirStore) Annotate(context.Context, string, map[string]string) error { return nil }

// Bucket is the output directory.
func (d *dirStore) Bucket() string { return d.dir }

// Put writes data whole through a sink of its own.
func (d *dirStore) Put(ctx context.Context, name string, meta map[string]string, data []byte) (*result.ObjectRef, error) {
	sink, err := d.Opener(ctx, name, meta)()
	if err != nil {
		return nil, err
	}
	if _, err := sink.Write(data); err != nil {
		_ = sink.Abort()
		return nil, err
	}
	return sink.Commit()
}

// fileSink writes content to a temporary file; its reference names that file (Bucket is the directory).
type fileSink struct {
	f      *os.File
	bw     *bufio.Writer
	h      hash.Hash
	n      int64
	dir    string
	closed bool
}

func (s *fileSink) Write(p []byte) (int, error) {
	if s.closed {
		return 0, artifact.ErrSinkClosed
	}
	n, err := s.bw.Write(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	return n, err
}

func (s *fileSink) Commit() (*result.ObjectRef, error) {
	if s.closed {
		return nil, artifact.ErrSinkClosed
	}
	s.closed = true
	err := s.bw.Flush()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(s.f.Name())
		return nil, fmt.Errorf("writing %s: %w", s.f.Name(), err)
	}
	return &result.ObjectRef{Bucket: s.dir, Name: filepath.Base(s.f.Name()), Size: s.n, SHA256: hex.EncodeToString(s.h.Sum(nil))}, nil
}

func (s *fileSink) Abort() error {
	if s.closed {
		return nil
	}
	s.closed = true
	_ = s.f.Close()
	return os.Remove(s.f.Name())
}

// SafeName turns a name that came from the device (a GetFile path, a script name) into a file name that
// cannot leave the output directory: only its last path element, only letters, digits, '.', '-' and '_',
// no leading dot (so never "." or ".."), at most 100 bytes, "unnamed" when nothing is left.
func SafeName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := strings.TrimLeft(b.String(), ".")
	if len(s) > 100 {
		s = s[len(s)-100:]
		s = strings.TrimLeft(s, ".")
	}
	if s == "" {
		return "unnamed"
	}
	return s
}

// saveResult writes the content of one result to dir as <actionId>_<index>_<safe name>: the script output
// (<script name>.output.txt) or the GetFile content (its original name), from the event when it was inline,
// else by renaming the file the dirStore streamed it into. The event's reference then names the final file.
// It returns the path written, or "" when the result has no content.
func saveResult(dir string, ev *result.Event) (string, error) {
	var (
		name   string
		ref    *result.ObjectRef
		inline []byte
	)
	switch {
	case ev.Script != nil:
		script := ev.Script.ScriptName
		if script == "" {
			script = ev.Params["ScriptName"]
		}
		name, ref, inline = SafeName(script+".output.txt"), ev.Script.OutputObject, []byte(ev.Script.Output)
	case ev.File != nil:
		name, ref = SafeName(ev.File.Name), ev.File.Object
		if ref == nil {
			if !ev.File.Inline {
				return "", fmt.Errorf("command %d: the file content was not kept (%s)", ev.Index, ev.File.NotInlineReason)
			}
			b, err := base64.StdEncoding.DecodeString(ev.File.ContentBase64)
			if err != nil {
				return "", fmt.Errorf("command %d: contentBase64: %w", ev.Index, err)
			}
			inline = b
		}
	default:
		return "", nil
	}
	final := fmt.Sprintf("%s_%d_%s", strings.ToLower(ev.ActionID), ev.Index, name)
	path := filepath.Join(dir, final)
	if ref != nil {
		if err := os.Rename(filepath.Join(dir, ref.Name), path); err != nil {
			return "", fmt.Errorf("command %d: %w", ev.Index, err)
		}
		ref.Bucket, ref.Name = dir, final
		return path, nil
	}
	if ev.Script != nil && ev.Script.OutputTruncated {
		return "", fmt.Errorf("command %d: only a preview of the script output was kept", ev.Index)
	}
	if err := writeFileAtomic(path, inline); err != nil {
		return "", fmt.Errorf("command %d: %w", ev.Index, err)
	}
	return path, nil
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".lr-relay-fetch-*.partial")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return errors.Join(err, os.Remove(f.Name()))
	}
	return nil
}

// fileDigest is the SHA-256 of a written file, for the line fetch prints about it.
func fileDigest(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return n, hex.EncodeToString(h.Sum(nil)), err
}
