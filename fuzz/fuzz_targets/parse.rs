//! Any bytes into `sip::parse`; whatever parses also goes through everything a capture and a
//! responsive reply do with it. Nothing may panic, and `len` must stay inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentrypeer::sip::{self, reply};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = sip::parse(data) else {
        return;
    };
    assert!(req.len <= data.len());
    assert!(req.body.len() <= req.len);
    let _ = (req.called_number(), req.user_agent(), req.to_has_tag());
    let cx = reply::ReplyContext {
        received: std::net::IpAddr::from([192, 0, 2, 9]),
        rport: 5060,
        local: std::net::SocketAddr::from(([192, 0, 2, 1], 5060)),
        transport: "UDP",
        to_tag: "fuzz",
        server: "fuzz",
    };
    for response in reply::respond(&req, &cx) {
        // Nothing from the request may end up as a line of its own in a response head.
        let head_end = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("every response has a head");
        let head = &response[..head_end];
        for line in head.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(!line.contains(&b'\r'), "a bare CR in {line:?}");
        }
    }
});
