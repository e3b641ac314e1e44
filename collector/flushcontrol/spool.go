package flushcontrol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The write-ahead spool: append-only segment files NNNNNNNN.seg of data and ack records in
// one directory, which one collector locks for itself. No fsync: it guards against a crashed
// collector, not a crashed machine, and /tmp outlives a reset of the execution environment.
//
// A record is a 24-byte little-endian header (magic "AFS1", kind, signal code, key length
// uint16, items uint32, payload length uint32, seq uint64), the key (the pipeline's
// "processor id/signal") and the payload (a serialized OTLP export request).

const (
	spoolMagic        = "AFS1"
	spoolHeaderSize   = 24
	recordData        = 1
	recordAck         = 2
	spoolSegmentBytes = 1 << 20
)

var errSpoolFull = errors.New("spool full")

// spoolRecord is one record read back from a segment.
type spoolRecord struct {
	kind    byte
	signal  signal
	key     string
	items   uint32
	seq     uint64
	payload []byte
}

// readSegment parses the records of one segment; it stops at a torn or foreign tail (a
// crash mid-write) and never fails.
func readSegment(data []byte) []spoolRecord {
	var out []spoolRecord
	for off := 0; off+spoolHeaderSize <= len(data); {
		h := data[off : off+spoolHeaderSize]
		if string(h[:4]) != spoolMagic {
			return out
		}
		kind, code := h[4], h[5]
		keyLen := int(binary.LittleEndian.Uint16(h[6:8]))
		items := binary.LittleEndian.Uint32(h[8:12])
		size := int(binary.LittleEndian.Uint32(h[12:16]))
		seq := binary.LittleEndian.Uint64(h[16:24])
		start := off + spoolHeaderSize
		end := start + keyLen + size
		if (kind != recordData && kind != recordAck) || size < 0 || end > len(data) || end < start {
			return out
		}
		rec := spoolRecord{kind: kind, key: string(data[start : start+keyLen]), items: items, seq: seq}
		if kind == recordData {
			sig, ok := signalOfSpoolCode(code)
			if !ok {
				return out
			}
			rec.signal = sig
			rec.payload = data[start+keyLen : end]
		}
		out = append(out, rec)
		off = end
	}
	return out
}

func encodeRecord(kind byte, code byte, key string, items uint32, seq uint64, payload []byte) []byte {
	buf := make([]byte, spoolHeaderSize+len(key)+len(payload))
	copy(buf[:4], spoolMagic)
	buf[4], buf[5] = kind, code
	binary.LittleEndian.PutUint16(buf[6:8], uint16(len(key)))
	binary.LittleEndian.PutUint32(buf[8:12], items)
	binary.LittleEndian.PutUint32(buf[12:16], uint32(len(payload)))
	binary.LittleEndian.PutUint64(buf[16:24], seq)
	copy(buf[spoolHeaderSize:], key)
	copy(buf[spoolHeaderSize+len(key):], payload)
	return buf
}

type spool struct {
	mu           sync.Mutex
	dir          string
	maxBytes     int64
	lock         *os.File
	file         *os.File
	segment      int
	segmentBytes int64
	bytes        int64
	live         map[int]map[uint64]struct{}
	seqSegment   map[uint64]int
	// disabled is why the spool stopped writing (a write failed); the collector goes on
	// without it.
	disabled string
	// replayed are the segments openSpool read, kept until dropReplayed.
	replayed []int
}

// dropReplayed removes the segments openSpool read, once their requests are written again.
func (s *spool) dropReplayed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.replayed {
		os.Remove(s.path(n))
	}
	s.replayed = nil
}

// openSpool locks dir and returns the data records earlier collectors left unacknowledged,
// in the order they were accepted. The old segments stay until the caller has written the
// requests again under new sequence numbers and calls dropReplayed: a crash in between
// replays them twice rather than never.
func openSpool(dir string, maxBytes int64) (*spool, []spoolRecord, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("cannot create the spool directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open the spool lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, nil, fmt.Errorf("spool %s is in use by another collector", dir)
	}
	s := &spool{dir: dir, maxBytes: maxBytes, lock: lock,
		live: map[int]map[uint64]struct{}{}, seqSegment: map[uint64]int{}}
	segments := s.segments()
	found := map[uint64]spoolRecord{}
	for _, n := range segments {
		data, err := os.ReadFile(s.path(n))
		if err != nil {
			continue
		}
		for _, rec := range readSegment(data) {
			if rec.kind == recordData {
				found[rec.seq] = rec
			} else {
				delete(found, rec.seq)
			}
		}
	}
	s.replayed = segments
	if len(segments) > 0 {
		s.segment = segments[len(segments)-1] + 1
	}
	if err := s.openSegment(); err != nil {
		s.close(false)
		return nil, nil, err
	}
	seqs := make([]uint64, 0, len(found))
	for seq := range found {
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	out := make([]spoolRecord, 0, len(seqs))
	for _, seq := range seqs {
		out = append(out, found[seq])
	}
	return s, out, nil
}

func (s *spool) segments() []int {
	entries, _ := os.ReadDir(s.dir)
	var out []int
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(name); err == nil {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

func (s *spool) path(segment int) string {
	return filepath.Join(s.dir, fmt.Sprintf("%08d.seg", segment))
}

func (s *spool) openSegment() error {
	f, err := os.OpenFile(s.path(s.segment), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cannot open a spool segment: %w", err)
	}
	s.file, s.segmentBytes = f, 0
	if s.live[s.segment] == nil {
		s.live[s.segment] = map[uint64]struct{}{}
	}
	return nil
}

// append records an accepted request before the sender is answered. errSpoolFull means
// the spool has no room: the sender gets backpressure.
func (s *spool) append(seq uint64, key string, sig signal, items int, payload []byte) error {
	return s.write1(seq, key, sig, items, payload, false)
}

// rewrite records a replayed request again; it was acknowledged before the crash, so the
// bound does not refuse it.
func (s *spool) rewrite(seq uint64, key string, sig signal, items int, payload []byte) error {
	return s.write1(seq, key, sig, items, payload, true)
}

func (s *spool) write1(seq uint64, key string, sig signal, items int, payload []byte, replay bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return nil
	}
	size := int64(spoolHeaderSize + len(key) + len(payload))
	if !replay && s.bytes+size > s.maxBytes {
		return fmt.Errorf("%w (%d of %d bytes)", errSpoolFull, s.bytes, s.maxBytes)
	}
	// Registered before the write, which may rotate to a new segment.
	s.live[s.segment][seq] = struct{}{}
	s.seqSegment[seq] = s.segment
	s.write(encodeRecord(recordData, sig.spoolCode(), key, uint32(items), seq, payload), true)
	return nil
}

// ack records that request seq needs no replay (sent, dropped or spilled).
func (s *spool) ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	segment, ok := s.seqSegment[seq]
	if !ok || s.file == nil {
		return
	}
	delete(s.seqSegment, seq)
	live := s.live[segment]
	delete(live, seq)
	if len(live) == 0 && segment != s.segment {
		s.removeSegment(segment)
		return
	}
	rec := encodeRecord(recordAck, 0, "", 0, seq, nil)
	if segment != s.segment {
		// The ack goes beside its request: in the current segment it would be removed with
		// that segment while the request's own segment is still on disk, and replayed.
		s.writeTo(segment, rec)
		return
	}
	s.write(rec, false)
	if len(live) == 0 && s.segmentBytes >= spoolSegmentBytes {
		s.rotate()
	}
}

// writeTo appends rec to an earlier segment (closed since the rotation).
func (s *spool) writeTo(segment int, rec []byte) {
	f, err := os.OpenFile(s.path(segment), os.O_WRONLY|os.O_APPEND, 0o600)
	if err == nil {
		_, err = f.Write(rec)
		if closeErr := f.Close(); err == nil {
			err = closeErr
		}
	}
	if err != nil {
		s.disabled = fmt.Sprintf("cannot write the spool (%v); continuing without it", err)
		s.file.Close()
		s.file = nil
		return
	}
	s.bytes += int64(len(rec))
}

func (s *spool) write(rec []byte, data bool) {
	if _, err := s.file.Write(rec); err != nil {
		s.disabled = fmt.Sprintf("cannot write the spool (%v); continuing without it", err)
		s.file.Close()
		s.file = nil
		return
	}
	s.bytes += int64(len(rec))
	s.segmentBytes += int64(len(rec))
	if data && s.segmentBytes >= spoolSegmentBytes {
		s.rotate()
	}
}

func (s *spool) rotate() {
	previous := s.segment
	s.file.Close()
	s.file = nil
	s.segment++
	if err := s.openSegment(); err != nil {
		s.disabled = fmt.Sprintf("%v; continuing without the spool", err)
		return
	}
	if len(s.live[previous]) == 0 {
		s.removeSegment(previous)
	}
}

func (s *spool) removeSegment(segment int) {
	if info, err := os.Stat(s.path(segment)); err == nil {
		s.bytes -= info.Size()
		os.Remove(s.path(segment))
	}
	delete(s.live, segment)
}

// close closes the spool; with empty (nothing is left to replay) its segments are removed.
func (s *spool) close(empty bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
	if empty {
		for _, n := range s.segments() {
			os.Remove(s.path(n))
		}
		s.bytes = 0
	}
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
}

// disabledReason is why the spool stopped writing, once, or "".
func (s *spool) disabledReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	reason := s.disabled
	s.disabled = ""
	return reason
}
