// Package flushcontrol holds what OTLP senders hand over and exports it only when told to:
// the processor answers at once and buffers; the control extension serves FlushControl.
package flushcontrol

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/afterflush/afterflush/collector/internal/controlpb"
)

// EnvControlEndpoint overrides every processor's control_endpoint.
const EnvControlEndpoint = "AFTERFLUSH_CONTROL_ENDPOINT"

// Reasons for dropped items that are not an exporter's own answer.
const (
	reasonShutdownDeadline = "shutdown_deadline"
	reasonNoPipeline       = "no_pipeline_after_restart"
	reasonSpillFailed      = "spill_failed"
	reasonSpoolDamaged     = "spool_damaged"
	reasonBackpressure     = "backpressure"
)

// Hub is what every flushcontrol processor and the control extension of one collector share:
// the buffers, the spool, the control and hand-over servers, the hand-over marks and the
// counts. main() makes one and hands it to both factories.
type Hub struct {
	startedAt time.Time
	stdout    io.Writer
	getenv    func(string) string

	logger atomic.Pointer[zap.Logger]
	ready  atomic.Bool

	mu       sync.Mutex
	groups   map[component.ID]*group
	pipes    map[string]*pipe
	order    []*pipe
	seq      uint64
	spool    *spool
	accepted [3]uint64
	totals   [3]counts
	rejected map[string]uint64
	// rejectedSinceDrain goes back to the companion in the next drain reply.
	rejectedSinceDrain map[string]uint64
	lastError          string

	// drainSlot lets one drain run at a time: a pipeline's items leave in order.
	drainSlot chan struct{}
	bgCtx     context.Context
	bgStop    context.CancelFunc
	bg        sync.WaitGroup
	stopOnce  sync.Once
	endOnce   sync.Once
	server    *controlServer
	markSrv   *handoverServer
	handovers handovers
	// onAwait, when set (tests), is called as a drain begins to wait for a mark.
	onAwait func(requestID string)
}

// DrainOptions are what a drain is asked to do; the zero value exports what is held now.
type DrainOptions struct {
	// Reason and RequestID say why the drain happens and which invocation it follows.
	Reason    string
	RequestID string
	// Spill writes what is still held afterwards to standard output as OTLP JSON lines.
	Spill bool
	// AwaitHandover first waits for RequestID's hand-over mark (without one, no wait), for
	// at most HandoverTimeout when > 0, else until the deadline; what is accepted meanwhile
	// is exported too.
	AwaitHandover   bool
	HandoverTimeout time.Duration
	// MaxDrain bounds the exports once the wait (if any) has ended; 0: the deadline alone.
	MaxDrain time.Duration
}

// group is the buffer bound shared by the pipelines of one processor ID.
type group struct {
	id    component.ID
	cfg   *Config
	used  int64
	above bool // past the high-water mark, an own drain started
}

// pipe is one pipeline's flushcontrol: its held requests, oldest first.
type pipe struct {
	key     string
	sig     signal
	group   *group
	send    sender
	entries []entry
	bytes   int64
}

type entry struct {
	seq   uint64
	data  []byte
	items int
}

type counts struct {
	exported uint64
	dropped  map[string]uint64
	spilled  uint64
}

func (c *counts) drop(reason string, n uint64) {
	if n == 0 {
		return
	}
	if c.dropped == nil {
		c.dropped = map[string]uint64{}
	}
	c.dropped[reason] += n
}

func (c *counts) add(o counts) {
	c.exported += o.exported
	c.spilled += o.spilled
	for r, n := range o.dropped {
		c.drop(r, n)
	}
}

// NewHub makes the shared state; startedAt is when the process started (for uptime and the
// ready line), stdout is where spilled data goes, getenv reads the environment.
func NewHub(startedAt time.Time, stdout io.Writer, getenv func(string) string) *Hub {
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{
		startedAt: startedAt, stdout: stdout, getenv: getenv,
		groups: map[component.ID]*group{}, pipes: map[string]*pipe{},
		rejected: map[string]uint64{}, rejectedSinceDrain: map[string]uint64{},
		drainSlot: make(chan struct{}, 1), bgCtx: ctx, bgStop: cancel,
		handovers: handovers{byID: map[string]*mark{}},
	}
	h.logger.Store(zap.NewNop())
	return h
}

func (h *Hub) log() *zap.Logger { return h.logger.Load() }

// register adds a pipeline's processor. Its spool key is its processor ID and signal, which
// is unique: the config converter gives every pipeline of a signal its own processor ID.
func (h *Hub) register(id component.ID, cfg *Config, sig signal, send sender, logger *zap.Logger) (*pipe, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.server == nil && logger != nil {
		// Until the control extension starts, the processors' logger serves.
		h.logger.Store(logger)
	}
	g, ok := h.groups[id]
	if !ok {
		g = &group{id: id, cfg: cfg}
		h.groups[id] = g
	}
	g.cfg = cfg
	// The config converter gives every pipeline of a signal its own processor ID, so a key
	// seen again is the same pipeline built again (a validation builds the pipelines before
	// the run does): the newer one replaces it.
	key := id.String() + "/" + sig.String()
	p := &pipe{key: key, sig: sig, group: g, send: send}
	if old, dup := h.pipes[key]; dup {
		for i, q := range h.order {
			if q == old {
				h.order[i] = p
			}
		}
	} else {
		h.order = append(h.order, p)
	}
	h.pipes[key] = p
	return p, nil
}

// accept holds one serialized request, or refuses it with backpressure.
func (h *Hub) accept(p *pipe, data []byte, items int) error {
	size := int64(len(data))
	h.mu.Lock()
	bound := p.group.cfg.bufferBytes()
	if p.group.used+size > bound {
		h.refuse(reasonBackpressure)
		h.mu.Unlock()
		return backpressure(fmt.Sprintf("flushcontrol buffer full (%d of %d bytes held)", p.group.used, bound), p.group.cfg.RetryAfter)
	}
	h.seq++
	seq := h.seq
	if h.spool != nil {
		if err := h.spool.append(seq, p.key, p.sig, items, data); err != nil {
			h.refuse(reasonBackpressure)
			h.mu.Unlock()
			return backpressure(err.Error(), p.group.cfg.RetryAfter)
		}
	}
	p.entries = append(p.entries, entry{seq: seq, data: data, items: items})
	p.bytes += size
	p.group.used += size
	h.accepted[p.sig] += uint64(items)
	startOwnDrain := h.pastHighWater(p.group)
	h.mu.Unlock()
	if startOwnDrain {
		h.ownDrain(p.group)
	}
	if reason := h.spoolDisabled(); reason != "" {
		h.log().Warn(reason)
	}
	return nil
}

func (h *Hub) refuse(reason string) {
	h.rejected[reason]++
	h.rejectedSinceDrain[reason]++
}

func backpressure(message string, retryAfter time.Duration) error {
	st := status.New(codes.ResourceExhausted, message)
	if detailed, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)}); err == nil {
		st = detailed
	}
	return st.Err()
}

// pastHighWater says whether g just went past its high-water mark (h.mu held).
func (h *Hub) pastHighWater(g *group) bool {
	pct := g.cfg.HighWaterMarkPercent
	if pct == 0 || g.above || !h.ready.Load() {
		return false
	}
	if g.used*100 <= g.cfg.bufferBytes()*int64(pct) {
		return false
	}
	g.above = true
	return true
}

// ownDrain exports without waiting for the companion once a buffer is past its high-water
// mark; it is the collector's own drain, so the collector logs it.
func (h *Hub) ownDrain(g *group) {
	h.mu.Lock()
	used, bound := g.used, g.cfg.bufferBytes()
	h.mu.Unlock()
	h.log().Info(fmt.Sprintf("buffer of %s past its high-water mark (%d of %d bytes held): exporting without waiting for a drain", g.id, used, bound))
	h.bg.Add(1)
	go func() {
		defer h.bg.Done()
		ctx, cancel := context.WithTimeout(h.bgCtx, g.cfg.DefaultDrainTimeout)
		defer cancel()
		reply := h.Drain(ctx, DrainOptions{Reason: "high-water-mark"})
		h.mu.Lock()
		// The companion never sees this reply: its refusals go back for the next drain it asks for.
		for reason, n := range reply.RejectedRequests {
			h.rejectedSinceDrain[reason] += n
		}
		h.mu.Unlock()
		h.logOwnDrain("high-water-mark", reply)
	}()
}

func (h *Hub) spoolDisabled() string {
	if h.spool == nil {
		return ""
	}
	return h.spool.disabledReason()
}

// drainReserve is the part of a drain kept free of exports so that its reply arrives before
// the caller's deadline: 5% of the time left, at most 50 ms.
func drainReserve(left time.Duration) time.Duration {
	return min(left/20, 50*time.Millisecond)
}

// spillReserve is the part of a spilling drain kept for writing what is left: writing OTLP
// JSON takes CPU (about 20 MB/s at a small Lambda's share), so it grows with what is held.
func spillReserve(left time.Duration, heldBytes int64) time.Duration {
	need := time.Duration(heldBytes) * time.Second / (20 << 20)
	return min(max(need, 10*time.Millisecond), left/2)
}

// Drain exports everything held when it is called, each pipeline in order, within ctx's
// deadline (or the default drain timeout); with Spill, what is still held afterwards is
// written to standard output as OTLP JSON lines. With AwaitHandover it first waits for the
// mark without holding the drain slot (other drains, the collector's own among them, go on
// meanwhile) and exports what was held when the wait ended. It never fails: problems are in
// the reply.
func (h *Hub) Drain(ctx context.Context, o DrainOptions) *controlpb.DrainReply {
	var wait handoverWait
	if o.AwaitHandover && o.RequestID != "" {
		wait = h.awaitHandover(ctx, o.RequestID, o.HandoverTimeout)
	}
	reply := h.export(ctx, o, wait)
	reply.Handover, reply.HandoverWaitUs = wait.ended, uint64(wait.took.Microseconds())
	return reply
}

// export is the drain once the wait (if any) has ended: its time is the reply's duration.
func (h *Hub) export(ctx context.Context, o DrainOptions, wait handoverWait) *controlpb.DrainReply {
	began := time.Now()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = began.Add(h.defaultDrainTimeout())
	}
	if o.MaxDrain > 0 && began.Add(o.MaxDrain).Before(deadline) {
		deadline = began.Add(o.MaxDrain)
	}
	deadline = deadline.Add(-drainReserve(time.Until(deadline)))
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	select {
	case h.drainSlot <- struct{}{}:
	case <-ctx.Done():
		// A free slot wins over a deadline already past (select picks either at random).
		select {
		case h.drainSlot <- struct{}{}:
		default:
			reply := h.reply(began, [3]counts{}, false, "another drain was still running at the deadline")
			return reply
		}
	}
	defer func() { <-h.drainSlot }()

	h.mu.Lock()
	pipes := append([]*pipe(nil), h.order...)
	snapshot := make([]int, len(pipes))
	var held int64
	for i, p := range pipes {
		snapshot[i] = len(p.entries)
		held += p.bytes
	}
	h.mu.Unlock()

	exportCtx := ctx
	if o.Spill {
		var cancelExports context.CancelFunc
		exportCtx, cancelExports = context.WithDeadline(ctx, deadline.Add(-spillReserve(time.Until(deadline), held)))
		defer cancelExports()
	}
	results := make([]pipeResult, len(pipes))
	var wg sync.WaitGroup
	for i, p := range pipes {
		if snapshot[i] == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = h.drainPipe(exportCtx, p, snapshot[i])
		}()
	}
	wg.Wait()

	var bySignal [3]counts
	complete := true
	lastErr := ""
	for i, p := range pipes {
		bySignal[p.sig].add(results[i].counts)
		if results[i].left > 0 {
			complete = false
		}
		if results[i].err != "" {
			lastErr = results[i].err
		}
	}
	if o.Spill {
		w := spillWriter(h.stdout)
		for _, p := range pipes {
			c := h.spillPipe(w, p, deadline)
			bySignal[p.sig].add(c)
		}
		if err := w.Flush(); err != nil {
			lastErr = fmt.Sprintf("cannot write spilled data: %v", err)
		}
	}
	h.mu.Lock()
	for s := range bySignal {
		h.totals[s].add(bySignal[s])
	}
	if lastErr != "" {
		h.lastError = lastErr
	}
	h.mu.Unlock()
	reply := h.reply(began, bySignal, complete, lastErr)
	h.log().Debug(fmt.Sprintf("drain (%s) %s%sin %.1f ms: %s", o.Reason, withSpace(o.RequestID), wait.describe(),
		float64(reply.DurationUs)/1000, describe(reply)))
	return reply
}

func (h *Hub) defaultDrainTimeout() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.order {
		return p.group.cfg.DefaultDrainTimeout
	}
	return createDefaultConfig().DefaultDrainTimeout
}

type pipeResult struct {
	counts counts
	left   int
	err    string
}

// drainPipe sends the first n held requests of p, coalesced, oldest first. A retryable
// failure (or the deadline) stops it and leaves the rest in place, first in line next time;
// a permanent failure drops what was sent, with its reason.
func (h *Hub) drainPipe(ctx context.Context, p *pipe, n int) pipeResult {
	var res pipeResult
	cfg := p.group.cfg
	for n > 0 {
		if ctx.Err() != nil {
			res.err = fmt.Sprintf("%s: the drain's deadline came before the export", p.key)
			break
		}
		h.mu.Lock()
		batch, items, size := 0, 0, 0
		for batch < n {
			e := p.entries[batch]
			if batch > 0 && (size+len(e.data) > cfg.requestBytes() ||
				(cfg.MaxRequestItems > 0 && items+e.items > cfg.MaxRequestItems)) {
				break
			}
			batch++
			items += e.items
			size += len(e.data)
		}
		data := make([]byte, 0, size)
		seqs := make([]uint64, 0, batch)
		for _, e := range p.entries[:batch] {
			data = append(data, e.data...)
			seqs = append(seqs, e.seq)
		}
		h.mu.Unlock()

		sent := time.Now()
		err := p.send(ctx, data)
		switch {
		case err == nil:
			res.counts.exported += uint64(items)
		case isPermanent(err):
			res.counts.drop(dropReason(err), uint64(items))
			res.err = oneLine(err)
		default:
			if ctx.Err() != nil {
				res.err = fmt.Sprintf("%s: no answer within %.3fs (deadline reached): %s", p.key, time.Since(sent).Seconds(), oneLine(err))
			} else {
				res.err = oneLine(err)
			}
			res.left = n
			return res
		}
		h.pop(p, batch, int64(size), seqs)
		n -= batch
	}
	res.left = n
	return res
}

// pop forgets the first count entries of p (sent, dropped or spilled).
func (h *Hub) pop(p *pipe, count int, size int64, seqs []uint64) {
	h.mu.Lock()
	p.entries = p.entries[count:]
	if len(p.entries) == 0 {
		p.entries = nil
	}
	p.bytes -= size
	p.group.used -= size
	// Back under the high-water mark: the next crossing starts an own drain again (while
	// above it, one own drain is enough; the companion's drains go on meanwhile).
	if g := p.group; g.above && g.used*100 <= g.cfg.bufferBytes()*int64(g.cfg.HighWaterMarkPercent) {
		g.above = false
	}
	h.mu.Unlock()
	if h.spool != nil {
		for _, seq := range seqs {
			h.spool.ack(seq)
		}
	}
}

// spillPipe writes what p still holds to w; what the deadline leaves no time for is dropped
// as shutdown_deadline, never left unsaid.
func (h *Hub) spillPipe(bw *bufio.Writer, p *pipe, deadline time.Time) counts {
	var c counts
	for {
		// Held requests are spilled together up to maxSpillChunk (concatenated, they are one
		// request): fewer, fuller lines; spillTo splits what is still larger.
		h.mu.Lock()
		if len(p.entries) == 0 {
			h.mu.Unlock()
			break
		}
		count, items := 0, 0
		var data []byte
		var seqs []uint64
		for _, e := range p.entries {
			if count > 0 && len(data)+len(e.data) > maxSpillChunk {
				break
			}
			data = append(data, e.data...)
			seqs = append(seqs, e.seq)
			items += e.items
			count++
		}
		h.mu.Unlock()
		if time.Now().After(deadline) {
			c.drop(reasonShutdownDeadline, uint64(items))
		} else if n, err := spillTo(bw, p.sig, data); err != nil {
			h.log().Warn(describeSpillError(p.sig, err))
			c.drop(reasonSpillFailed, uint64(items))
		} else {
			c.spilled += uint64(n)
		}
		h.pop(p, count, int64(len(data)), seqs)
	}
	// Each pipeline's lines reach stdout before the next pipeline spills (the drain flushes
	// the last, and says so in its reply if that fails).
	if err := bw.Flush(); err != nil {
		h.log().Warn(fmt.Sprintf("cannot write spilled %s: %v", p.sig, err))
	}
	return c
}

func (h *Hub) reply(began time.Time, by [3]counts, complete bool, lastErr string) *controlpb.DrainReply {
	h.mu.Lock()
	defer h.mu.Unlock()
	reply := &controlpb.DrainReply{
		DurationUs:       uint64(time.Since(began).Microseconds()),
		Complete:         complete,
		LastError:        lastErr,
		RejectedRequests: h.rejectedSinceDrain,
	}
	h.rejectedSinceDrain = map[string]uint64{}
	reply.Traces, reply.Metrics, reply.Logs = h.signalCounts(traces, by[traces]), h.signalCounts(metrics, by[metrics]), h.signalCounts(logs, by[logs])
	return reply
}

// signalCounts is c with what s still holds (h.mu held).
func (h *Hub) signalCounts(s signal, c counts) *controlpb.SignalCounts {
	// A copy: the reply is encoded after h.mu is released, while later drains add to c.dropped.
	out := &controlpb.SignalCounts{Exported: c.exported, Dropped: maps.Clone(c.dropped), Spilled: c.spilled}
	for _, p := range h.order {
		if p.sig != s {
			continue
		}
		for _, e := range p.entries {
			out.Buffered += uint64(e.items)
		}
		out.BufferedBytes += uint64(p.bytes)
	}
	return out
}

// Status is what is held, the totals since start and whether the collector is ready.
func (h *Hub) Status() *controlpb.StatusReply {
	h.mu.Lock()
	defer h.mu.Unlock()
	rejected := make(map[string]uint64, len(h.rejected))
	for k, v := range h.rejected {
		rejected[k] = v
	}
	return &controlpb.StatusReply{
		Traces:           h.signalCounts(traces, h.totals[traces]),
		Metrics:          h.signalCounts(metrics, h.totals[metrics]),
		Logs:             h.signalCounts(logs, h.totals[logs]),
		Ready:            h.ready.Load(),
		LastExportError:  h.lastError,
		UptimeMs:         uint64(time.Since(h.startedAt).Milliseconds()),
		AcceptedTraces:   h.accepted[traces],
		AcceptedMetrics:  h.accepted[metrics],
		AcceptedLogs:     h.accepted[logs],
		Pid:              uint32(os.Getpid()),
		RejectedRequests: rejected,
	}
}

// endpoint is where FlushControl is served: the environment, else the first processor's
// setting (by ID), else the default.
func (h *Hub) endpoint() string {
	if e := h.getenv(EnvControlEndpoint); e != "" {
		return e
	}
	if g := h.firstGroup(); g != nil {
		return g.cfg.ControlEndpoint
	}
	return DefaultControlEndpoint
}

func (h *Hub) firstGroup() *group {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.groups))
	byName := map[string]*group{}
	for id, g := range h.groups {
		ids = append(ids, id.String())
		byName[id.String()] = g
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	return byName[ids[0]]
}

// start opens the spool (replaying what an earlier collector left), serves FlushControl and
// takes hand-over marks; the control extension calls it before any processor or receiver
// starts.
func (h *Hub) start(logger *zap.Logger) error {
	h.logger.Store(logger)
	socket, err := SocketPath(h.endpoint())
	if err != nil {
		return fmt.Errorf("%s: %w", EnvControlEndpoint, err)
	}
	markSocket, err := handoverSocket(h.getenv, socket)
	if err != nil {
		return err
	}
	if g := h.firstGroup(); g != nil && g.cfg.Spool {
		dir := g.cfg.SpoolDirectory
		if dir == "" {
			dir = filepath.Join(filepath.Dir(socket), "spool")
		}
		if err := h.openSpool(dir, h.spoolBound()); err != nil {
			h.log().Warn(fmt.Sprintf("%v; continuing without a spool", err))
		}
	}
	server, err := serveControl(socket, h)
	if err != nil {
		return err
	}
	markSrv, err := serveHandover(markSocket, h)
	if err != nil {
		server.stop()
		return err
	}
	h.server, h.markSrv = server, markSrv
	return nil
}

// spoolBound is twice what every buffer together may hold: room for a full buffer and for
// the records of requests already sent whose segment still holds others.
func (h *Hub) spoolBound() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var total int64
	for _, g := range h.groups {
		total += g.cfg.bufferBytes()
	}
	return 2 * total
}

func (h *Hub) openSpool(dir string, maxBytes int64) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	sp, found, err := openSpool(dir, maxBytes)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.spool = sp
	var replayed, lost, damaged [3]uint64
	for _, rec := range found {
		p := h.pipes[rec.key]
		if p == nil || p.sig != rec.signal {
			lost[rec.signal] += uint64(rec.items)
			continue
		}
		if _, err := countItems(rec.signal, rec.payload); err != nil {
			// Held, it would fail every export it is coalesced into.
			damaged[rec.signal] += uint64(rec.items)
			continue
		}
		h.seq++
		data := append([]byte(nil), rec.payload...)
		// Held even when the spool could not record it again (it then says why, once).
		_ = sp.rewrite(h.seq, p.key, p.sig, int(rec.items), data)
		p.entries = append(p.entries, entry{seq: h.seq, data: data, items: int(rec.items)})
		p.bytes += int64(len(data))
		p.group.used += int64(len(data))
		h.accepted[p.sig] += uint64(rec.items)
		replayed[p.sig] += uint64(rec.items)
	}
	sp.dropReplayed()
	for s, n := range lost {
		h.totals[s].drop(reasonNoPipeline, n)
	}
	for s, n := range damaged {
		h.totals[s].drop(reasonSpoolDamaged, n)
	}
	h.mu.Unlock()
	if replayed != [3]uint64{} {
		h.log().Info("replayed from the spool: " + describeItems(replayed))
	}
	if lost != [3]uint64{} {
		h.log().Warn("dropped from the spool, no pipeline takes them now: " + describeItems(lost))
	}
	if damaged != [3]uint64{} {
		h.log().Warn("dropped from the spool, damaged: " + describeItems(damaged))
	}
	return nil
}

// markReady is called once every pipeline has started: the receivers listen.
func (h *Hub) markReady() {
	h.ready.Store(true)
	h.log().Info(fmt.Sprintf("ready in %d ms (pid %d)", time.Since(h.startedAt).Milliseconds(), os.Getpid()))
}

func (h *Hub) markNotReady() { h.ready.Store(false) }

// shutdownDrain is the drain when the collector stops (SIGTERM): everything, within the
// shutdown timeout, then a spill of the rest. The first processor to stop runs it for all.
func (h *Hub) shutdownDrain(ctx context.Context) {
	h.stopOnce.Do(func() {
		h.bgStop()
		h.bg.Wait()
		g := h.firstGroup()
		if g == nil {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, g.cfg.ShutdownTimeout)
		defer cancel()
		reply := h.Drain(ctx, DrainOptions{Reason: "collector-shutdown", Spill: true})
		h.logOwnDrain("collector-shutdown", reply)
	})
}

// stop ends the control and hand-over servers and closes the spool (emptied when nothing is held).
func (h *Hub) stop() {
	h.endOnce.Do(func() {
		h.bgStop()
		h.bg.Wait()
		if h.markSrv != nil {
			h.markSrv.stop()
		}
		if h.server != nil {
			h.server.stop()
		}
		h.mu.Lock()
		empty := true
		for _, p := range h.order {
			if len(p.entries) > 0 {
				empty = false
			}
		}
		sp := h.spool
		h.mu.Unlock()
		if sp != nil {
			sp.close(empty)
		}
	})
}

func (h *Hub) logOwnDrain(reason string, reply *controlpb.DrainReply) {
	text := fmt.Sprintf("drain (%s) in %.1f ms: %s", reason, float64(reply.DurationUs)/1000, describe(reply))
	if reply.Complete && reply.LastError == "" {
		h.log().Info(text)
	} else {
		h.log().Warn(text)
	}
}

func withSpace(s string) string {
	if s == "" {
		return ""
	}
	return s + " "
}

func describeItems(n [3]uint64) string {
	parts := make([]string, 0, 3)
	for _, s := range signals {
		parts = append(parts, fmt.Sprintf("%d %s", n[s], s.noun()))
	}
	return strings.Join(parts, ", ")
}

// describe is a drain reply as one line, in the words the companion and the tests read:
// "exported 3 spans, ...; dropped 2 spans (http 400); 1 spans still buffered; last error: ...".
func describe(r *controlpb.DrainReply) string {
	per := [3]*controlpb.SignalCounts{r.Traces, r.Metrics, r.Logs}
	var exported, spilled, buffered []string
	var dropped []string
	for _, s := range signals {
		c := per[s]
		if c.Exported > 0 {
			exported = append(exported, fmt.Sprintf("%d %s", c.Exported, s.noun()))
		}
		if c.Spilled > 0 {
			spilled = append(spilled, fmt.Sprintf("%d %s", c.Spilled, s.noun()))
		}
		if c.Buffered > 0 {
			buffered = append(buffered, fmt.Sprintf("%d %s", c.Buffered, s.noun()))
		}
		reasons := make([]string, 0, len(c.Dropped))
		for reason := range c.Dropped {
			reasons = append(reasons, reason)
		}
		sort.Strings(reasons)
		for _, reason := range reasons {
			dropped = append(dropped, fmt.Sprintf("%d %s (%s)", c.Dropped[reason], s.noun(), reason))
		}
	}
	parts := []string{"exported nothing"}
	if len(exported) > 0 {
		parts[0] = "exported " + strings.Join(exported, ", ")
	}
	if len(dropped) > 0 {
		parts = append(parts, "dropped "+strings.Join(dropped, ", "))
	}
	if len(spilled) > 0 {
		parts = append(parts, "spilled "+strings.Join(spilled, ", "))
	}
	if len(buffered) > 0 {
		parts = append(parts, strings.Join(buffered, ", ")+" still buffered")
	}
	return strings.Join(parts, "; ") + "; last error: " + r.LastError
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
