//! Any bytes, split anywhere: framing never panics, never yields a line
//! over the limit, and yields the same lines however the input is split.
#![no_main]

use herd::pure::framing::{Frame, LineBuffer};
use libfuzzer_sys::fuzz_target;

fn frames(max_line: usize, input: &[u8], chunk: usize) -> Vec<(bool, Vec<u8>)> {
    let mut lb = LineBuffer::new(max_line);
    let mut out = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let spare = lb.spare();
        let n = chunk.min(spare.len()).min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        lb.filled(n);
        rest = &rest[n..];
        while let Some(f) = lb.next_frame() {
            out.push(match f {
                Frame::Line(l) => (true, l.to_vec()),
                Frame::TooLong(l) => (false, l.to_vec()),
            });
        }
    }
    if let Some(f) = lb.finish() {
        out.push(match f {
            Frame::Line(l) => (true, l.to_vec()),
            Frame::TooLong(l) => (false, l.to_vec()),
        });
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let max_line = 1 + usize::from(knobs % 64);
    let chunk = 1 + usize::from(knobs / 64) * 7;
    let whole = frames(max_line, input, input.len().max(1));
    for (_, line) in &whole {
        assert!(line.len() <= max_line);
    }
    assert_eq!(whole, frames(max_line, input, chunk));
});
