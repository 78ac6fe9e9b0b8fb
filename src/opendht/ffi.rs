//! The few functions of OpenDHT's C API (`opendht_c.h`, libopendht-c) the node uses, and a safe
//! [`Runner`] around them: run a node on a UDP port, bootstrap, put a value permanently (and
//! cancel that), listen on a key. The only unsafe code of the `opendht` module lives here.
//!
//! OpenDHT calls back from its own threads. The callbacks here never block and never unwind
//! into C: a value is copied (if it is not too large) and handed to a closure that only tries
//! to send it on a bounded channel, inside `catch_unwind`.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// `dht::InfoHash`: 20 bytes.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct InfoHash {
    d: [u8; 20],
}

impl InfoHash {
    /// The SHA-1 of `key`, as OpenDHT names a key given as text.
    pub(super) fn of(key: &str) -> InfoHash {
        let mut h = InfoHash { d: [0; 20] };
        let c = CString::new(key).unwrap_or_default();
        // SAFETY: `h` is a valid out-parameter; `c` is NUL-terminated and outlives the call.
        unsafe { dht_infohash_get_from_string(&mut h, c.as_ptr()) };
        h
    }

    pub(super) fn hex(&self) -> String {
        self.d.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[repr(C)]
struct DataView {
    data: *const u8,
    size: usize,
}

#[repr(C)]
struct NodeConfig {
    node_id: InfoHash,
    network: u32,
    is_bootstrap: bool,
    maintain_storage: bool,
    persist_path: *const c_char,
}

#[repr(C)]
struct Identity {
    privatekey: *mut c_void,
    certificate: *mut c_void,
}

#[repr(C)]
struct SecureConfig {
    node_config: NodeConfig,
    id: Identity,
}

#[repr(C)]
struct RunnerConfig {
    dht_config: SecureConfig,
    threaded: bool,
    proxy_server: *const c_char,
    push_node_id: *const c_char,
    push_token: *const c_char,
    push_topic: *const c_char,
    push_platform: *const c_char,
    peer_discovery: bool,
    peer_publish: bool,
    server_ca: *mut c_void,
    client_identity: Identity,
    log: bool,
}

#[repr(C)]
struct RawRunner {
    _private: [u8; 0],
}
#[repr(C)]
struct RawValue {
    _private: [u8; 0],
}
#[repr(C)]
struct OpToken {
    _private: [u8; 0],
}

type ValueCb = extern "C" fn(value: *const RawValue, expired: bool, user_data: *mut c_void) -> bool;
type DoneCb = extern "C" fn(ok: bool, user_data: *mut c_void);
type ShutdownCb = extern "C" fn(user_data: *mut c_void);

#[link(name = "opendht-c")]
unsafe extern "C" {
    fn dht_version() -> *const c_char;
    fn dht_infohash_get_from_string(h: *mut InfoHash, s: *const c_char);
    fn dht_value_new(data: *const u8, size: usize) -> *mut RawValue;
    fn dht_value_unref(v: *mut RawValue);
    fn dht_value_get_data(v: *const RawValue) -> DataView;
    fn dht_value_get_id(v: *const RawValue) -> u64;
    fn dht_value_set_user_type(v: *mut RawValue, user_type: *const c_char);
    fn dht_runner_config_default(config: *mut RunnerConfig);
    fn dht_runner_new() -> *mut RawRunner;
    fn dht_runner_delete(r: *mut RawRunner);
    fn dht_runner_run_config(r: *mut RawRunner, port: u16, config: *const RunnerConfig) -> i32;
    fn dht_runner_bootstrap(r: *mut RawRunner, host: *const c_char, service: *const c_char);
    fn dht_runner_get_bound_port(r: *const RawRunner, af: u16) -> u16;
    fn dht_runner_listen(
        r: *mut RawRunner,
        h: *const InfoHash,
        cb: ValueCb,
        done: ShutdownCb,
        user_data: *mut c_void,
    ) -> *mut OpToken;
    fn dht_runner_cancel_listen(r: *mut RawRunner, h: *const InfoHash, token: *mut OpToken);
    fn dht_op_token_delete(token: *mut OpToken);
    fn dht_runner_put(
        r: *mut RawRunner,
        h: *const InfoHash,
        v: *const RawValue,
        done: DoneCb,
        user_data: *mut c_void,
        permanent: bool,
    );
    fn dht_runner_cancel_put(r: *mut RawRunner, h: *const InfoHash, id: u64);
    fn dht_runner_shutdown(r: *mut RawRunner, done: ShutdownCb, user_data: *mut c_void);
}

/// The library's version, as it reports it.
pub(super) fn version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string (or null).
    let p = unsafe { dht_version() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A value put by this node, kept so that its permanent put can be cancelled.
pub(super) struct Value(*mut RawValue);

// SAFETY: an OpenDHT value is an immutable `shared_ptr<Value>` once put; its reference count
// is atomic.
unsafe impl Send for Value {}

impl Value {
    /// A value holding `data`, typed `user_type` (no signature, no recipient: upstream's form).
    pub(super) fn new(data: &[u8], user_type: &str) -> Option<Value> {
        // SAFETY: `data` is valid for `data.len()` bytes; OpenDHT copies it.
        let v = unsafe { dht_value_new(data.as_ptr(), data.len()) };
        if v.is_null() {
            return None;
        }
        let t = CString::new(user_type).ok()?;
        // SAFETY: `v` is a live value we own; `t` is NUL-terminated; OpenDHT copies it.
        unsafe { dht_value_set_user_type(v, t.as_ptr()) };
        Some(Value(v))
    }

    /// The id the DHT gave it when it was put (0 before).
    fn id(&self) -> u64 {
        // SAFETY: `self.0` is a live value.
        unsafe { dht_value_get_id(self.0) }
    }
}

impl Drop for Value {
    fn drop(&mut self) {
        // SAFETY: we own one reference, released once.
        unsafe { dht_value_unref(self.0) };
    }
}

/// What a listen hands on: a value's bytes, or `None` for one larger than the bound given.
type OnValue = Box<dyn Fn(Option<Vec<u8>>) + Send + Sync>;

struct ListenState {
    on_value: OnValue,
    max_bytes: usize,
}

extern "C" fn on_listen_value(
    value: *const RawValue,
    expired: bool,
    user_data: *mut c_void,
) -> bool {
    if expired || value.is_null() || user_data.is_null() {
        return true;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `user_data` is the `ListenState` given to `dht_runner_listen`, alive until
        // its done callback, which runs after the last value callback.
        let state = unsafe { &*(user_data as *const ListenState) };
        // SAFETY: `value` is live for the duration of this callback.
        let view = unsafe { dht_value_get_data(value) };
        if view.size > state.max_bytes {
            (state.on_value)(None);
            return;
        }
        let bytes = if view.data.is_null() || view.size == 0 {
            Vec::new()
        } else {
            // SAFETY: OpenDHT guarantees `size` readable bytes at `data` while `value` lives.
            unsafe { std::slice::from_raw_parts(view.data, view.size) }.to_vec()
        };
        (state.on_value)(Some(bytes));
    }));
    true
}

extern "C" fn on_listen_done(user_data: *mut c_void) {
    if user_data.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the pointer made by `Box::into_raw` in `listen`, released here once.
        drop(unsafe { Box::from_raw(user_data as *mut ListenState) });
    }));
}

extern "C" fn on_shutdown(_user_data: *mut c_void) {}

/// What a put's completion calls, once, with whether the DHT stored the value.
type OnDone = Box<dyn FnOnce(bool) + Send>;

extern "C" fn on_put_done(ok: bool, user_data: *mut c_void) {
    if user_data.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the pointer made by `Box::into_raw` in `put`; OpenDHT calls this once.
        let done = unsafe { Box::from_raw(user_data as *mut OnDone) };
        done(ok);
    }));
}

/// A listen under way, cancelled by [`Runner::cancel_listen`].
pub(super) struct Listen(*mut OpToken);

// SAFETY: the token is an opaque handle OpenDHT's runner takes from any thread.
unsafe impl Send for Listen {}

/// An OpenDHT node: its own threads, its UDP sockets (IPv4 and IPv6 on one port).
pub(super) struct Runner(*mut RawRunner);

// SAFETY: `DhtRunner` is built to be driven from any thread (its operations are queued to its
// own thread).
unsafe impl Send for Runner {}
// SAFETY: as above; every method takes the runner by shared reference to queue an operation.
unsafe impl Sync for Runner {}

/// `AF_INET`.
const AF_INET: u16 = 2;

impl Runner {
    /// Starts a node on UDP `port` (0: any), without LAN peer discovery: it joins the network
    /// through its bootstrap node only.
    pub(super) fn run(port: u16) -> Result<Runner, std::io::Error> {
        // SAFETY: returns a new runner, owned by the `Runner` (deleted on drop).
        let raw = unsafe { dht_runner_new() };
        if raw.is_null() {
            return Err(std::io::Error::other("cannot create an OpenDHT node"));
        }
        let runner = Runner(raw);
        let mut config = std::mem::MaybeUninit::<RunnerConfig>::zeroed();
        // SAFETY: fills every field of the zeroed config.
        unsafe { dht_runner_config_default(config.as_mut_ptr()) };
        // SAFETY: initialised by the call above (and zeroed before).
        let mut config = unsafe { config.assume_init() };
        config.threaded = true;
        config.peer_discovery = false;
        config.peer_publish = false;
        config.log = false;
        // SAFETY: `raw` is live; `config` outlives the call (OpenDHT copies what it keeps).
        let rc = unsafe { dht_runner_run_config(raw, port, &config) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc.abs()));
        }
        Ok(runner)
    }

    /// The UDP port it is bound to (IPv4).
    pub(super) fn port(&self) -> u16 {
        // SAFETY: `self.0` is live.
        unsafe { dht_runner_get_bound_port(self.0, AF_INET) }
    }

    /// Pings `host`:`service` to join the network through it (resolved by OpenDHT).
    pub(super) fn bootstrap(&self, host: &str, service: &str) {
        let (Ok(h), Ok(s)) = (CString::new(host), CString::new(service)) else {
            return;
        };
        // SAFETY: `self.0` is live; the strings are NUL-terminated and copied by OpenDHT.
        unsafe { dht_runner_bootstrap(self.0, h.as_ptr(), s.as_ptr()) };
    }

    /// Puts `value` under `key`, kept alive by this node until cancelled; `on_done` gets the
    /// outcome, on OpenDHT's thread (it must not block).
    pub(super) fn put(
        &self,
        key: &InfoHash,
        value: &Value,
        on_done: impl FnOnce(bool) + Send + 'static,
    ) {
        let done: OnDone = Box::new(on_done);
        let user = Box::into_raw(Box::new(done)) as *mut c_void;
        // SAFETY: runner, key and value are live; OpenDHT takes its own reference to the value
        // and calls `on_put_done` once with `user`.
        unsafe { dht_runner_put(self.0, key, value.0, on_put_done, user, true) };
    }

    /// Stops keeping a value put earlier alive.
    pub(super) fn cancel_put(&self, key: &InfoHash, value: &Value) {
        let id = value.id();
        if id != 0 {
            // SAFETY: `self.0` and `key` are live.
            unsafe { dht_runner_cancel_put(self.0, key, id) };
        }
    }

    /// Listens on `key`: `on_value` gets each new value's bytes, or `None` for one longer than
    /// `max_bytes`. It runs on OpenDHT's thread and must not block.
    pub(super) fn listen(
        &self,
        key: &InfoHash,
        max_bytes: usize,
        on_value: impl Fn(Option<Vec<u8>>) + Send + Sync + 'static,
    ) -> Listen {
        let state = Box::into_raw(Box::new(ListenState {
            on_value: Box::new(on_value),
            max_bytes,
        })) as *mut c_void;
        // SAFETY: runner and key are live; `state` lives until `on_listen_done` frees it,
        // which OpenDHT calls when the listen ends.
        Listen(unsafe { dht_runner_listen(self.0, key, on_listen_value, on_listen_done, state) })
    }

    /// Ends a listen.
    pub(super) fn cancel_listen(&self, key: &InfoHash, listen: Listen) {
        if listen.0.is_null() {
            return;
        }
        // SAFETY: the token came from `listen` on this runner and is used once.
        unsafe {
            dht_runner_cancel_listen(self.0, key, listen.0);
            dht_op_token_delete(listen.0);
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // SAFETY: `self.0` is live; shutdown then delete (which joins OpenDHT's threads).
        unsafe {
            dht_runner_shutdown(self.0, on_shutdown, std::ptr::null_mut());
            dht_runner_delete(self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bad_actors_key_is_upstreams_infohash() {
        assert_eq!(
            InfoHash::of("bad_actors").hex(),
            "14d30143330e2e0e922ed4028a60ff96a59800ad"
        );
        assert!(!version().is_empty());
    }
}
