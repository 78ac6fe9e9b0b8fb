//! Any bytes, cut into reads of fuzzer-chosen sizes, through `sip::frame::Framer` the way a TCP
//! connection feeds it. Nothing may panic, every frame must lie inside the buffer, and cutting
//! the stream differently must not change the frames found.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentrypeer::sip::frame::{Frame, Framer};

fn frames(data: &[u8], cuts: &[u8]) -> Result<Vec<Frame>, ()> {
    let mut framer = Framer::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut rest = data;
    let mut cut = cuts.iter().cycle();
    while !rest.is_empty() {
        // No cuts means one read of everything.
        let n = cut
            .next()
            .map_or(rest.len(), |&c| usize::from(c))
            .clamp(1, rest.len());
        let (read, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(read);
        loop {
            match framer.next(&buf).map_err(|_| ())? {
                Frame::Incomplete => break,
                f @ (Frame::KeepAlive(n) | Frame::Message(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    if let Frame::Message(_) = f {
                        let _ = sentrypeer::sip::parse(&buf[..n]);
                    }
                    buf.drain(..n);
                    out.push(f);
                }
            }
        }
    }
    Ok(out)
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (data, cuts) = input;
    let chunked = frames(&data, &cuts);
    let whole = frames(&data, &[]);
    // Keep-alive runs may be split differently; messages may not.
    let messages = |f: Result<Vec<Frame>, ()>| {
        f.map(|v| {
            v.into_iter()
                .filter(|f| matches!(f, Frame::Message(_)))
                .collect::<Vec<_>>()
        })
    };
    if let (Ok(a), Ok(b)) = (messages(chunked), messages(whole)) {
        assert_eq!(a, b);
    }
});
