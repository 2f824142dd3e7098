//! How [`super::run`] keeps every core busy with bounded memory: a small pipeline of work units written in order.
//!
//! A tensor becomes one or more units. Copied bytes are a unit with nothing to compute; whole f32 values from
//! [`TensorData::Values`] are one unit solved as a whole; stored bytes from [`TensorData::Encoded`] become pieces
//! of whole rows (about [`PIECE_VALUES`] values each, never across an expert's slice), each decoded, checked and
//! solved on its own as a small tensor of those rows. Units are computed on the rayon pool, up to [`DEPTH`] at a
//! time, while the calling thread writes the finished ones to the sink: the write of one piece overlaps the
//! solving of the next ones, and a piece's tail overlaps the next piece's start.
//!
//! Invariants: the sink receives units in the order they were issued, whatever order the pool finishes them in,
//! and the first failure in that order is the one reported (so errors, like bytes, do not depend on the thread
//! count); at most [`DEPTH`] computed units are in flight, so memory is a few pieces plus the source's mapped
//! pages, released a piece at a time, whatever the size of the model. Pieces hold whole rows and rows are
//! solved independently (the codecs' contract, see [`crate::solver`]), so the bytes equal a whole-tensor solve.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;

use quantforge_formats::GgmlType;

use super::transform::decode;
use super::{check_size, first_non_finite, RunOptions, Sink, Source, StreamError, StreamTensor, TensorData};
use crate::solver::{SolveJob, Solver, SolverError, TensorStats};

/// Values per piece of an encoded tensor: 4 MiB of f32.
pub const PIECE_VALUES: usize = 1 << 20;
/// Computed units in flight at most.
pub const DEPTH: usize = 4;

/// The row ranges of the pieces of a tensor of `n_rows` rows of `row_len` values, whose rows come in slices of
/// `slice_rows` (an expert's rows; a piece never spans two slices).
pub fn piece_rows(n_rows: usize, slice_rows: usize, row_len: usize) -> Vec<Range<usize>> {
    let per_piece = (PIECE_VALUES / row_len.max(1)).max(1);
    let slice_rows = slice_rows.max(1);
    let mut out = Vec::with_capacity(n_rows.div_ceil(per_piece));
    let mut start = 0;
    while start < n_rows {
        let slice_end = (start / slice_rows).saturating_add(1).saturating_mul(slice_rows);
        let end = start.saturating_add(per_piece).min(slice_end).min(n_rows);
        out.push(start..end);
        start = end;
    }
    out
}

/// The statistics of the rows of one piece: an expert's slice of a diagonal importance vector (as
/// [`crate::solver::CodecSolver`] picks it for a whole tensor), anything else unchanged.
fn piece_stats<'a>(stats: TensorStats<'a>, first_row: usize, slice_rows: usize, row_len: usize) -> TensorStats<'a> {
    match stats {
        TensorStats::Diagonal(w) if !w.is_empty() => {
            let slice = first_row / slice_rows.max(1);
            let start = (slice * row_len) % w.len();
            TensorStats::Diagonal(&w[start..(start + row_len).min(w.len())])
        }
        other => other,
    }
}

/// A finished computation: the unit's sequence number, its bytes (or why there are none) and the value buffer
/// it used, handed back for reuse.
struct Done {
    seq: u64,
    result: Result<Vec<u8>, StreamError>,
    values: Vec<f32>,
    whole: bool,
}

/// A unit waiting to be written.
enum Slot<'s> {
    Ready(Cow<'s, [u8]>),
    Computing,
    Computed(Result<Vec<u8>, StreamError>),
}

struct Unit<'s> {
    index: usize,
    /// Whether it is the tensor's first and last unit (a tensor of one unit is written whole).
    first: bool,
    last: bool,
    slot: Slot<'s>,
}

/// One piece of an encoded tensor, as a task sees it.
struct Piece<'s> {
    index: usize,
    tensor: &'s StreamTensor,
    src: Arc<Cow<'s, [u8]>>,
    src_ty: GgmlType,
    src_row_bytes: usize,
    ty: GgmlType,
    row_bytes: usize,
    rows: Range<usize>,
    stats: TensorStats<'s>,
}

/// The writer's side of the pipeline: issued units in order, the channel results come back on, spare buffers.
struct Pipe<'s> {
    units: VecDeque<Unit<'s>>,
    /// Sequence number of `units[0]`.
    front: u64,
    in_flight: usize,
    tx: Sender<Done>,
    rx: Receiver<Done>,
    spare_values: Vec<Vec<f32>>,
    spare_out: Vec<Vec<u8>>,
    /// The whole-tensor value buffer, while a unit that uses it is in flight.
    whole_out: bool,
    returned_whole: Option<Vec<f32>>,
    written: u64,
}

impl<'s> Pipe<'s> {
    fn new() -> Self {
        let (tx, rx) = channel();
        Pipe {
            units: VecDeque::new(),
            front: 0,
            in_flight: 0,
            tx,
            rx,
            spare_values: Vec::new(),
            spare_out: Vec::new(),
            whole_out: false,
            returned_whole: None,
            written: 0,
        }
    }

    /// Queue a unit; returns its sequence number.
    fn push(&mut self, index: usize, first: bool, last: bool, slot: Slot<'s>) -> u64 {
        if matches!(slot, Slot::Computing) {
            self.in_flight += 1;
        }
        self.units.push_back(Unit { index, first, last, slot });
        self.front + self.units.len() as u64 - 1
    }

    /// Wait for one computation to finish and file its result.
    fn wait_one(&mut self) {
        let done = if rayon::current_thread_index().is_some() {
            // On a pool thread, blocking could starve the pool of the very thread that would finish the work:
            // run pool work while waiting.
            loop {
                match self.rx.try_recv() {
                    Ok(d) => break d,
                    Err(TryRecvError::Empty) => {
                        if rayon::yield_now() != Some(rayon::Yield::Executed) {
                            std::thread::yield_now();
                        }
                    }
                    // Cannot happen while `self.tx` lives.
                    Err(TryRecvError::Disconnected) => return,
                }
            }
        } else {
            match self.rx.recv() {
                Ok(d) => d,
                Err(_) => return,
            }
        };
        self.in_flight -= 1;
        if done.whole {
            self.whole_out = false;
            self.returned_whole = Some(done.values);
        } else if self.spare_values.len() < DEPTH {
            self.spare_values.push(done.values);
        }
        if let Some(u) = done.seq.checked_sub(self.front).and_then(|i| self.units.get_mut(i as usize)) {
            u.slot = Slot::Computed(done.result);
        }
    }

    /// Write every finished unit at the front, in order; stop at the first one still computing.
    fn write_ready<S: Source + ?Sized, K: Sink>(
        &mut self,
        source: &S,
        sink: &mut K,
        opts: &RunOptions<'_>,
    ) -> Result<(), StreamError> {
        while let Some(u) = self.units.front() {
            if matches!(u.slot, Slot::Computing) {
                break;
            }
            let Some(u) = self.units.pop_front() else { break };
            self.front += 1;
            let bytes: Cow<'_, [u8]> = match u.slot {
                Slot::Ready(b) => b,
                Slot::Computed(r) => Cow::Owned(r?),
                Slot::Computing => unreachable!("checked above"),
            };
            if u.first && u.last {
                sink.write(u.index, &bytes)?;
            } else {
                sink.write_piece(u.index, &bytes)?;
            }
            self.written += bytes.len() as u64;
            if u.last {
                source.release(u.index);
                opts.progress.item_done(u.index, self.tensor_bytes(u.index, source));
            }
            if let Cow::Owned(v) = bytes {
                if self.spare_out.len() < DEPTH {
                    self.spare_out.push(v);
                }
            }
        }
        Ok(())
    }

    fn tensor_bytes<S: Source + ?Sized>(&self, index: usize, source: &S) -> u64 {
        source.tensors().get(index).map_or(0, |t| t.size)
    }

    /// Wait until fewer than `max` units are in flight, writing what finishes.
    fn throttle<S: Source + ?Sized, K: Sink>(
        &mut self,
        max: usize,
        source: &S,
        sink: &mut K,
        opts: &RunOptions<'_>,
    ) -> Result<(), StreamError> {
        self.write_ready(source, sink, opts)?;
        while self.in_flight >= max.max(1) {
            self.wait_one();
            self.write_ready(source, sink, opts)?;
        }
        Ok(())
    }
}

/// Run every tensor of `source` through `solver` into `sink` (already open); returns the bytes written.
pub fn drive<S: Source + ?Sized, K: Sink>(
    source: &S,
    solver: &dyn Solver,
    sink: &mut K,
    opts: &RunOptions<'_>,
) -> Result<u64, S::Error> {
    let stop = AtomicBool::new(false);
    let result = rayon::in_place_scope(|scope| {
        let mut pipe = Pipe::new();
        let r = issue_all(scope, &mut pipe, source, solver, sink, opts, &stop);
        if r.is_err() {
            // Units still queued on the pool skip their work; the scope waits for them.
            stop.store(true, Ordering::Relaxed);
        }
        r.map(|()| pipe.written)
    });
    result
}

fn issue_all<'scope, 's: 'scope, S: Source + ?Sized, K: Sink>(
    scope: &rayon::Scope<'scope>,
    pipe: &mut Pipe<'s>,
    source: &'s S,
    solver: &'scope dyn Solver,
    sink: &mut K,
    opts: &RunOptions<'_>,
    stop: &'scope AtomicBool,
) -> Result<(), S::Error> {
    let mut values = Vec::new();
    for (i, t) in source.tensors().iter().enumerate() {
        if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(StreamError::Interrupted.into());
        }
        if pipe.whole_out {
            // The value buffer is the source's to fill again only once its last solve is done.
            pipe.throttle(1, source, sink, opts)?;
        }
        if let Some(v) = pipe.returned_whole.take() {
            values = v;
        }
        opts.progress.item(i, &t.name, &t.detail);
        match source.read(i, &mut values)? {
            TensorData::Bytes(bytes) => {
                check_size(t, bytes.len())?;
                pipe.push(i, true, true, Slot::Ready(bytes));
            }
            TensorData::Values => {
                let ty = t.ty.ok_or_else(|| StreamError::NoType { tensor: t.name.clone() })?;
                let stats = source.stats(i)?;
                pipe.throttle(DEPTH, source, sink, opts)?;
                let seq = pipe.push(i, true, true, Slot::Computing);
                pipe.whole_out = true;
                let (tx, reject) = (pipe.tx.clone(), opts.reject_non_finite);
                let mut out = pipe.spare_out.pop().unwrap_or_default();
                let mut whole = std::mem::take(&mut values);
                scope.spawn(move |_| {
                    let result = guarded(stop, &tx, seq, || {
                        solve_whole(t, ty, stats, &whole, &mut out, solver, reject).map(|()| std::mem::take(&mut out))
                    });
                    let _ = tx.send(Done { seq, result, values: std::mem::take(&mut whole), whole: true });
                });
            }
            TensorData::Encoded { ty: src_ty, bytes } => {
                let ty = t.ty.ok_or_else(|| StreamError::NoType { tensor: t.name.clone() })?;
                let stats = source.stats(i)?;
                let (row_len, n_rows, slice_rows, src_row_bytes, row_bytes) = piece_shape(t, src_ty, ty, bytes.len())?;
                let rows = piece_rows(n_rows, slice_rows, row_len);
                if rows.is_empty() {
                    pipe.push(i, true, true, Slot::Ready(Cow::Borrowed(&[])));
                }
                let src = Arc::new(bytes);
                let n_pieces = rows.len();
                for (k, rows) in rows.into_iter().enumerate() {
                    pipe.throttle(DEPTH, source, sink, opts)?;
                    let piece = Piece {
                        index: i,
                        tensor: t,
                        src: Arc::clone(&src),
                        src_ty,
                        src_row_bytes,
                        ty,
                        row_bytes,
                        stats: piece_stats(stats, rows.start, slice_rows, row_len),
                        rows,
                    };
                    let seq = pipe.push(i, k == 0, k + 1 == n_pieces, Slot::Computing);
                    let (tx, reject) = (pipe.tx.clone(), opts.reject_non_finite);
                    let mut vals = pipe.spare_values.pop().unwrap_or_default();
                    let mut out = pipe.spare_out.pop().unwrap_or_default();
                    scope.spawn(move |_| {
                        let result = guarded(stop, &tx, seq, || {
                            solve_piece(&piece, source, solver, &mut vals, &mut out, reject)
                                .map(|()| std::mem::take(&mut out))
                        });
                        let _ = tx.send(Done { seq, result, values: vals, whole: false });
                    });
                }
            }
        }
    }
    pipe.throttle(1, source, sink, opts)?;
    pipe.write_ready(source, sink, opts)?;
    Ok(())
}

/// Run `work` unless the run has stopped. A panic still reports the unit (so the writer never waits for it
/// forever) and then goes on to the scope, which raises it when the run ends.
fn guarded(
    stop: &AtomicBool,
    tx: &Sender<Done>,
    seq: u64,
    work: impl FnOnce() -> Result<Vec<u8>, StreamError>,
) -> Result<Vec<u8>, StreamError> {
    if stop.load(Ordering::Relaxed) {
        return Err(StreamError::Interrupted);
    }
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(r) => r,
        Err(panic) => {
            stop.store(true, Ordering::Relaxed);
            let _ = tx.send(Done { seq, result: Err(StreamError::Interrupted), values: Vec::new(), whole: false });
            resume_unwind(panic)
        }
    }
}

/// Row length, row count, rows per expert slice, and source and output bytes per row of an encoded tensor,
/// checked against the bytes the source gave and the size planned.
fn piece_shape(
    t: &StreamTensor,
    src_ty: GgmlType,
    ty: GgmlType,
    src_len: usize,
) -> Result<(usize, usize, usize, usize, usize), StreamError> {
    let shape = || StreamError::Solve { tensor: t.name.clone(), source: SolverError::Shape { ne: t.ne.clone(), ty } };
    let row_len = t.ne.first().copied().unwrap_or(1);
    let n_rows: u64 = t.ne.iter().skip(1).product();
    let slice_rows = t.ne.get(1).copied().unwrap_or(1);
    let src_row = src_ty.row_size(row_len).ok_or_else(shape)?;
    let out_row = ty.row_size(row_len).ok_or_else(shape)?;
    let src_total = src_row.checked_mul(n_rows);
    if src_total != Some(src_len as u64) {
        return Err(StreamError::Size {
            tensor: t.name.clone(),
            expected: src_total.unwrap_or(u64::MAX),
            got: src_len as u64,
        });
    }
    if out_row.checked_mul(n_rows) != Some(t.size) {
        return Err(shape());
    }
    let usize_of = |x: u64| usize::try_from(x).map_err(|_| shape());
    Ok((usize_of(row_len)?, usize_of(n_rows)?, usize_of(slice_rows)?, usize_of(src_row)?, usize_of(out_row)?))
}

/// Decode, check and solve one piece into `out`, releasing its source pages once decoded.
fn solve_piece<S: Source + ?Sized>(
    p: &Piece<'_>,
    source: &S,
    solver: &dyn Solver,
    values: &mut Vec<f32>,
    out: &mut Vec<u8>,
    reject_non_finite: bool,
) -> Result<(), StreamError> {
    let name = &p.tensor.name;
    let row_len = p.tensor.ne.first().copied().unwrap_or(1) as usize;
    let bytes = p.rows.start * p.src_row_bytes..p.rows.end * p.src_row_bytes;
    source.prefetch_bytes(p.index, bytes.clone());
    values.resize(p.rows.len() * row_len, 0.0);
    decode(p.src_ty, &p.src[bytes.clone()], values)
        .map_err(|e| StreamError::Solve { tensor: name.clone(), source: SolverError::Codec(e) })?;
    source.release_bytes(p.index, bytes);
    if reject_non_finite {
        if let Some(k) = first_non_finite(values) {
            let index = p.rows.start * row_len + k;
            return Err(StreamError::NonFinite { tensor: name.clone(), index, value: values[k] });
        }
    }
    out.clear();
    out.resize(p.rows.len() * p.row_bytes, 0);
    let ne = [row_len as u64, p.rows.len() as u64];
    let job = SolveJob { name, ne: &ne, ty: p.ty, stats: p.stats };
    solver.solve(&job, values, out).map_err(|source| StreamError::Solve { tensor: name.clone(), source })
}

/// Check and solve a whole tensor's values into `out`.
fn solve_whole(
    t: &StreamTensor,
    ty: GgmlType,
    stats: TensorStats<'_>,
    values: &[f32],
    out: &mut Vec<u8>,
    solver: &dyn Solver,
    reject_non_finite: bool,
) -> Result<(), StreamError> {
    if reject_non_finite {
        if let Some(index) = first_non_finite(values) {
            return Err(StreamError::NonFinite { tensor: t.name.clone(), index, value: values[index] });
        }
    }
    let job = SolveJob { name: &t.name, ne: &t.ne, ty, stats };
    out.clear();
    out.resize(t.size as usize, 0);
    solver.solve(&job, values, out).map_err(|source| StreamError::Solve { tensor: t.name.clone(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_hold_whole_rows_and_never_span_an_expert() {
        // 4096-value rows: 256 rows per piece.
        assert_eq!(piece_rows(600, 600, 4096), [0..256, 256..512, 512..600]);
        // Three experts of 300 rows: pieces stop at 300 and 600.
        assert_eq!(piece_rows(900, 300, 4096), [0..256, 256..300, 300..556, 556..600, 600..856, 856..900]);
        // A row longer than a piece is a piece of its own.
        assert_eq!(piece_rows(3, 3, PIECE_VALUES * 2), [0..1, 1..2, 2..3]);
        assert!(piece_rows(0, 0, 256).is_empty());
    }

    #[test]
    fn a_piece_gets_its_experts_importance_slice() {
        let w: Vec<f32> = (0..6).map(|i| i as f32).collect();
        // Two experts of 4 rows of 3 values.
        let TensorStats::Diagonal(s) = piece_stats(TensorStats::Diagonal(&w), 5, 4, 3) else { panic!() };
        assert_eq!(s, [3.0, 4.0, 5.0]);
        let TensorStats::Diagonal(s) = piece_stats(TensorStats::Diagonal(&w[..3]), 5, 4, 3) else { panic!() };
        assert_eq!(s, [0.0, 1.0, 2.0]);
    }
}
