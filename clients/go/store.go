package tributary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Store keeps the follow's position. Load returns nil (and no error) when nothing is saved.
//
// An application that keeps its state in a database can keep the position in the same
// transaction: write the position Apply receives inside Apply's transaction, make Save write
// the same position again (idempotent) and Clear delete it.
type Store interface {
	Load(ctx context.Context) (Position, error)
	Save(ctx context.Context, position Position) error
	Clear(ctx context.Context) error
}

// MemoryStore keeps the position in memory. The zero value is an empty store.
type MemoryStore struct {
	mu       sync.Mutex
	position Position
}

// NewMemoryStore returns an empty in-memory store.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Load returns a copy of the saved position, nil if none.
func (s *MemoryStore) Load(context.Context) (Position, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.position.Clone(), nil
}

// Save keeps a copy of position.
func (s *MemoryStore) Save(_ context.Context, position Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.position = position.Clone()
	if s.position == nil {
		s.position = Position{}
	}
	return nil
}

// Clear forgets the position.
func (s *MemoryStore) Clear(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.position = nil
	return nil
}

// FileStore keeps the position in a JSON file. Save writes a temporary file in the same
// directory, fsyncs it, renames it over Path and fsyncs the directory, so the file always holds
// a whole position.
type FileStore struct {
	Path string
}

// NewFileStore returns a store that keeps the position in the file at path.
func NewFileStore(path string) *FileStore { return &FileStore{Path: path} }

type fileOffset struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
}

type fileContent struct {
	Offsets []fileOffset `json:"offsets"`
}

// Load reads the position; a missing file is no position (nil, nil).
func (s *FileStore) Load(context.Context) (Position, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tributary: read position: %w", err)
	}
	var content fileContent
	if err := json.Unmarshal(data, &content); err != nil {
		return nil, fmt.Errorf("tributary: position file %s: %w", s.Path, err)
	}
	p := make(Position, len(content.Offsets))
	for _, o := range content.Offsets {
		p[TopicPartition{Topic: o.Topic, Partition: o.Partition}] = o.Offset
	}
	return p, nil
}

// Save writes position atomically (temporary file, fsync, rename, fsync of the directory).
func (s *FileStore) Save(_ context.Context, position Position) error {
	content := fileContent{Offsets: []fileOffset{}}
	for _, tp := range position.Partitions() {
		content.Offsets = append(content.Offsets, fileOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: position[tp]})
	}
	data, err := json.MarshalIndent(content, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(s.Path)
	tmp, err := os.CreateTemp(dir, filepath.Base(s.Path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("tributary: save position: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("tributary: save position: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("tributary: save position: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tributary: save position: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.Path); err != nil {
		return fmt.Errorf("tributary: save position: %w", err)
	}
	return syncDir(dir)
}

// Clear deletes the file.
func (s *FileStore) Clear(context.Context) error {
	if err := os.Remove(s.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("tributary: clear position: %w", err)
	}
	return syncDir(filepath.Dir(s.Path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("tributary: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("tributary: sync %s: %w", dir, err)
	}
	return nil
}
