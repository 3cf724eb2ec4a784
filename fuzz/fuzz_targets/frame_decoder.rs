//! Arbitrary bytes through the frame reader, with both limits.
//!
//! Checks, beyond "never panics":
//! - no frame longer than the limit is ever returned;
//! - the reader never asks the allocator for more than the limit: a hostile
//!   length prefix must be refused *before* allocating (frame.rs promises
//!   this; a counting allocator is the only way to see it from outside);
//! - the same bytes handed out a few at a time, with `Interrupted` errors in
//!   between (what a socket does), give the same frames and the same final
//!   error: the reader must not depend on how reads are split.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use pihealth::protocol::frame::{read_frame, MAX_FRAME, MAX_HANDSHAKE_FRAME};

/// The largest single allocation (or reallocation) since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, noting the largest request.
struct Measuring;

// SAFETY: every call is forwarded unchanged to `System`; only a size is noted.
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Measuring = Measuring;

/// Hands out at most `step` bytes per read, and fails every other read with
/// `Interrupted` when `interrupt` is set.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
    interrupt: bool,
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt && self.calls.is_multiple_of(2) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Read frames until the first error; check each read's allocations.
fn frames(reader: &mut dyn Read, max: usize) -> (Vec<Vec<u8>>, io::ErrorKind) {
    let mut out = Vec::new();
    loop {
        LARGEST.store(0, Ordering::Relaxed);
        let result = read_frame(reader, max);
        let largest = LARGEST.load(Ordering::Relaxed);
        // The body buffer is at most `max`; the error path allocates a
        // short message. Nothing may be sized by an unchecked length.
        assert!(
            largest <= max.max(256),
            "read_frame allocated {largest} bytes with a limit of {max}"
        );
        match result {
            Ok(body) => {
                assert!(body.len() <= max, "frame of {} > {max}", body.len());
                out.push(body);
            }
            Err(e) => return (out, e.kind()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    for max in [MAX_HANDSHAKE_FRAME, MAX_FRAME] {
        let whole = frames(&mut &wire[..], max);
        let mut trickle = Trickle {
            data: wire,
            step: usize::from(control & 0x0f) + 1,
            interrupt: control & 0x80 != 0,
            calls: 0,
        };
        let split = frames(&mut trickle, max);
        assert_eq!(whole, split, "result depends on how reads are split");
    }
});
