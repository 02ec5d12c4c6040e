//! Large `f32` buffers of the fused ops, reused across calls instead of allocated afresh.
//!
//! A training step allocates the same activation and gradient buffers in every step;
//! fresh ones cost a zeroing pass each and, once the allocator has handed their pages back
//! to the kernel, a page fault per page. [`take`] hands out a buffer of an exact length
//! that an earlier call gave back (its contents stale: callers overwrite every element),
//! [`give`] keeps one for later, up to [`MAX_BYTES`] in all.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Buffers shorter than this are left to the allocator.
const MIN_LEN: usize = 16 * 1024;
/// Most bytes kept; buffers given back beyond it are freed.
pub const MAX_BYTES: usize = 1 << 30;

#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<T>(f: impl FnOnce(&mut Pool) -> T) -> T {
    let mut guard = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(Pool::default))
}

/// A buffer of `len` values for the caller to overwrite entirely: one given back earlier
/// (stale values) when there is one of that length, zeros otherwise.
pub fn take(len: usize) -> Vec<f32> {
    if len >= MIN_LEN {
        let reused = with_pool(|pool| {
            let buffer = pool.free.get_mut(&len).and_then(Vec::pop)?;
            pool.bytes -= len * size_of::<f32>();
            Some(buffer)
        });
        if let Some(buffer) = reused {
            return buffer;
        }
    }
    vec![0f32; len]
}

/// A copy of `values` in a [`take`]n buffer.
pub fn copy_of(values: &[f32]) -> Vec<f32> {
    let mut buffer = take(values.len());
    buffer.copy_from_slice(values);
    buffer
}

/// Keeps `buffers` for later [`take`]s (short ones, and any past [`MAX_BYTES`], are freed).
pub fn give(buffers: impl IntoIterator<Item = Vec<f32>>) {
    with_pool(|pool| {
        for buffer in buffers {
            let bytes = buffer.len() * size_of::<f32>();
            if buffer.len() >= MIN_LEN && pool.bytes + bytes <= MAX_BYTES {
                pool.bytes += bytes;
                pool.free.entry(buffer.len()).or_default().push(buffer);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_and_short_ones_are_not_kept() {
        let len = MIN_LEN + 12_345; // a length no other test uses
        let mut buffer = take(len);
        assert_eq!(buffer.len(), len);
        assert!(buffer.iter().all(|&v| v == 0.0), "a fresh buffer is zeroed");
        buffer[7] = 3.5;
        let address = buffer.as_ptr();
        give([buffer, vec![1.0; 10]]);
        let again = take(len);
        assert_eq!((again.as_ptr(), again[7]), (address, 3.5));
        assert_eq!(take(10), vec![0.0; 10]);
    }
}
