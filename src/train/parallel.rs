//! Row chunks spread over worker threads, each running LibTorch single-threaded.
//!
//! LibTorch's own intra-op threads busy-wait between operations; on a machine whose cores are
//! shared that spinning burns several times the useful CPU time. Independent chunks on plain
//! threads parallelise without it, and give the same result whatever the number of threads.

use std::sync::mpsc;

/// Runs `f(state, start, len)` on every chunk, chunk `j` on worker `j % workers`, one worker per
/// state. Each worker owns its state (LibTorch tensors are `Send` but not `Sync`, so a state
/// holds the worker's own handles) and runs with gradients off. `on_done(len)` is called on
/// this thread as chunks finish. Returns the states and the results in chunk order. A panic in a
/// worker is re-raised here.
pub fn par_chunks<S, T, F>(
    states: Vec<S>,
    chunks: &[(i64, i64)],
    f: F,
    on_done: impl FnMut(i64),
) -> (Vec<S>, Vec<T>)
where
    S: Send,
    T: Send,
    F: Fn(&mut S, i64, i64) -> T + Sync,
{
    par_chunks_with(states, chunks, f, on_done, Pages::Release)
}

/// What a parallel pass does with its temporaries' memory pages when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// Hand them back to the system (what [`par_chunks`] does).
    Release,
    /// Keep them for the next pass, which the caller repeats with the same sizes (a Lloyd
    /// iteration), rather than hand them back and fault them in again (measured: a tenth of
    /// k-means' time went to zeroing them). The caller releases them when the repeats end.
    Keep,
}

/// [`par_chunks`], with what to do with the pages of the pass's temporaries.
pub fn par_chunks_with<S, T, F>(
    states: Vec<S>,
    chunks: &[(i64, i64)],
    f: F,
    mut on_done: impl FnMut(i64),
    pages: Pages,
) -> (Vec<S>, Vec<T>)
where
    S: Send,
    T: Send,
    F: Fn(&mut S, i64, i64) -> T + Sync,
{
    if chunks.len() <= 1 {
        // One chunk: run it here. A thread and an allocator trim per pass would cost more than
        // small passes (k-means on a few thousand points runs thousands of them) take.
        let mut states = states;
        let results = match states.first_mut() {
            Some(state) => tch::no_grad(|| {
                chunks
                    .iter()
                    .map(|&(s, len)| {
                        let r = f(state, s, len);
                        on_done(len);
                        r
                    })
                    .collect()
            }),
            None => Vec::new(),
        };
        return (states, results);
    }
    let workers = states.len().max(1);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .into_iter()
            .enumerate()
            .map(|(w, mut state)| {
                let tx = tx.clone();
                let f = &f;
                scope.spawn(move || {
                    let results = tch::no_grad(|| {
                        let mut results = Vec::new();
                        for (j, &(s, len)) in chunks.iter().enumerate().skip(w).step_by(workers) {
                            results.push((j, f(&mut state, s, len)));
                            // The receiver outlives every worker inside this scope.
                            let _ = tx.send(len);
                        }
                        results
                    });
                    (state, results)
                })
            })
            .collect();
        drop(tx);
        for len in rx {
            on_done(len);
        }
        let mut states = Vec::with_capacity(workers);
        let mut all = Vec::with_capacity(chunks.len());
        for h in handles {
            match h.join() {
                Ok((state, results)) => {
                    states.push(state);
                    all.extend(results);
                }
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
        // The workers are gone; their allocator arenas keep the pages of every chunk's
        // temporaries unless handed back, and the next pass allocates other sizes on top.
        if pages == Pages::Release {
            crate::train::allocator::release_free_memory();
        }
        all.sort_by_key(|(j, _)| *j);
        (states, all.into_iter().map(|(_, t)| t).collect())
    })
}

/// Turns at LibTorch's process-wide thread count, so that two trainings in one process never
/// interleave their changes to it.
static TORCH_THREADS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets LibTorch's own thread count (process-wide), in turn with [`with_torch_threads`].
pub fn set_torch_threads(threads: usize) {
    let _turn = TORCH_THREADS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::set_num_threads(threads.max(1) as i32);
}

/// Runs `f` with LibTorch's own threads set to `threads`, then puts back the count it found,
/// also when `f` panics. For one large operation that nothing else runs beside (a Cholesky
/// solve between passes), so that it does not leave the other workers' cores idle. Callers
/// take turns (with each other and [`set_torch_threads`]); `f` must not call either.
pub fn with_torch_threads<T>(threads: usize, f: impl FnOnce() -> T) -> T {
    // A panic in another caller's `f` leaves nothing to repair: the count is restored below.
    let _turn = TORCH_THREADS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = tch::get_num_threads();
    tch::set_num_threads(threads.max(1) as i32);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    tch::set_num_threads(before);
    out.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// `(start, len)` chunks of `step` rows covering `0..n`.
pub fn chunks(n: i64, step: i64) -> Vec<(i64, i64)> {
    let step = step.max(1);
    (0..n)
        .step_by(step as usize)
        .map(|s| (s, step.min(n - s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// Callers on several threads at once each run with their own count (other tests that
    /// train set theirs through the same turns), and a panicking call hands its turn on.
    #[test]
    fn torch_threads_are_set_for_each_call_in_turn() {
        std::thread::scope(|s| {
            for t in 1..=4 {
                s.spawn(move || {
                    for _ in 0..50 {
                        assert_eq!(with_torch_threads(t, tch::get_num_threads), t as i32);
                    }
                });
            }
        });
        let panicked = std::panic::catch_unwind(|| with_torch_threads(2, || panic!("no")));
        assert!(panicked.is_err());
        assert_eq!(with_torch_threads(3, tch::get_num_threads), 3);
    }

    #[test]
    fn results_come_back_in_chunk_order_with_states() {
        let x = Tensor::arange(10, (Kind::Int64, Device::Cpu));
        let states: Vec<(Tensor, i64)> = (0..3).map(|_| (x.shallow_clone(), 0)).collect();
        let mut seen = 0;
        let (states, out) = par_chunks(
            states,
            &chunks(10, 3),
            |st, s, len| {
                st.1 += len;
                st.0.narrow(0, s, len).sum(Kind::Int64).int64_value(&[])
            },
            |len| seen += len,
        );
        assert_eq!(out, vec![3, 12, 21, 9]);
        assert_eq!(seen, 10);
        assert_eq!(states.iter().map(|s| s.1).sum::<i64>(), 10);
    }
}
