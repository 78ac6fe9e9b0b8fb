//! The credentials side of responsive mode: nonces this node can recognise as its own without
//! remembering them, the check of a Digest answer against the passwords we expect attackers to
//! try, and the opt-in fake success that lets a password guesser "register" and then shows what
//! it dials.
//!
//! A nonce is the time it was made and a keyed hash (HMAC-SHA256 under a key drawn at start)
//! of that time and the source address it was sent to, written in the persona's format. So a
//! nonce proves that its sender received our challenge at that address within
//! [`NONCE_LIFETIME`]: only such answers count towards `--sip-accept-register-after` or can
//! match a trap password, and a spoofed source can never "register", so the call answers
//! registration unlocks are sent only to addresses that showed they asked for them.
//!
//! State is two maps keyed by source address (failed attempts, registrations), each capped at
//! [`MAX_TRACKED_SOURCES`] and expiring, so a flood of sources costs bounded memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::hmac;

use crate::settings::ConfigError;
use crate::sip::auth::Credentials;
use crate::sip::persona::{NONCE_HASH_BYTES, Nonce, Persona};

/// How long a nonce we issued is accepted: long enough for a password guesser's next attempt,
/// short enough that a captured challenge is soon worthless (Kamailio's default, 300 s).
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Sources whose failed attempts, or whose registration, are remembered at once. Beyond it
/// expired entries are dropped, then the entry closest to expiry.
pub const MAX_TRACKED_SOURCES: usize = 16_384;
/// How long failed attempts from one source are remembered after its last one.
pub const FAILURES_KEPT: Duration = Duration::from_secs(3600);
/// The registration time granted when none is asked for, and the most granted (Asterisk's
/// default and maximum `Expires` for a contact).
pub const DEFAULT_EXPIRES: u32 = 3600;
/// The least registration time granted to a request asking for a positive time.
pub const MIN_EXPIRES: u32 = 60;
/// The most trap passwords: each Digest answer with our nonce is checked against all of them
/// (two MD5s each), so this bounds the work one request can cause to about what writing its
/// event costs. Bait lists are short: the passwords guessers try first.
pub const MAX_TRAP_PASSWORDS: usize = 64;
/// The longest trap password, in bytes.
pub const MAX_TRAP_PASSWORD_BYTES: usize = 128;
/// The most times `--sip-accept-register-after` may ask for.
pub const MAX_ACCEPT_AFTER: u32 = 100_000;

/// `--sip-persona`, `--sip-accept-register-after`, `--sip-trap-passwords`, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrapConfig {
    pub persona: Persona,
    /// Accept a REGISTER once this many answers with our nonce from one source have failed.
    pub accept_after: Option<u32>,
    /// Passwords that are accepted at once (and whose use is recorded).
    pub trap_passwords: Vec<String>,
}

/// The raw values, as given on the command line, in the environment or in the file.
#[derive(Debug, Default)]
pub struct RawTrapConfig {
    pub persona: Option<String>,
    pub accept_after: Option<String>,
    pub trap_passwords: Option<std::path::PathBuf>,
}

impl TrapConfig {
    /// Checks the values and reads the trap password file (one password a line; empty lines
    /// and lines starting with `#` are skipped).
    pub fn resolve(raw: RawTrapConfig) -> Result<Self, ConfigError> {
        let persona = match raw.persona {
            None => Persona::Default,
            Some(name) => Persona::parse(&name).ok_or_else(|| {
                ConfigError::new(
                    "--sip-persona",
                    &name,
                    format!(
                        "expected one of {}",
                        crate::sip::persona::PERSONA_NAMES.join(", ")
                    ),
                )
            })?,
        };
        let accept_after = raw
            .accept_after
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= MAX_ACCEPT_AFTER)
                    .ok_or_else(|| {
                        ConfigError::new(
                            "--sip-accept-register-after",
                            &s,
                            format!("expected a number from 0 to {MAX_ACCEPT_AFTER}"),
                        )
                    })
            })
            .transpose()?;
        let trap_passwords = match raw.trap_passwords {
            None => Vec::new(),
            Some(path) => read_passwords(&path)?,
        };
        Ok(Self {
            persona,
            accept_after,
            trap_passwords,
        })
    }

    /// Whether any fake success is configured.
    pub fn accepts(&self) -> bool {
        self.accept_after.is_some() || !self.trap_passwords.is_empty()
    }
}

fn read_passwords(path: &Path) -> Result<Vec<String>, ConfigError> {
    let option = "--sip-trap-passwords";
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new(option, path.display(), e))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if line.len() > MAX_TRAP_PASSWORD_BYTES {
            return Err(ConfigError::new(
                option,
                path.display(),
                format!("a password is longer than {MAX_TRAP_PASSWORD_BYTES} bytes"),
            ));
        }
        if !out.iter().any(|p| p == line) {
            out.push(line.to_string());
        }
    }
    if out.len() > MAX_TRAP_PASSWORDS {
        return Err(ConfigError::new(
            option,
            path.display(),
            format!("more than {MAX_TRAP_PASSWORDS} passwords"),
        ));
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            option,
            path.display(),
            "no passwords in the file",
        ));
    }
    Ok(out)
}

/// What a Digest answer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Its nonce is one we issued to this source, still fresh.
    pub own_nonce: bool,
    /// It is the digest of a trap password (only ever with our own nonce).
    pub trap_password_matched: bool,
}

/// What to answer a REGISTER carrying credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Refuse,
    /// Registered for this many seconds (0: the registration was removed).
    Accept(u32),
}

/// The running state: the key, the settings, failed attempts and registrations.
pub struct Trap {
    key: hmac::Key,
    config: TrapConfig,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    registered: Mutex<HashMap<IpAddr, Instant>>,
}

impl std::fmt::Debug for Trap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trap")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Trap {
    /// A new state with a key of its own: nonces from before a restart are not ours.
    pub fn new(config: TrapConfig) -> Self {
        let mut secret = [0u8; 32];
        // The system's random source; a failure would leave a fixed key, which still works
        // (nonces only need to be unguessable to keep spoofed sources out).
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            config,
            failures: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &TrapConfig {
        &self.config
    }

    pub fn persona(&self) -> Persona {
        self.config.persona
    }

    fn hash(&self, secs: u32, source: IpAddr) -> [u8; NONCE_HASH_BYTES] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&secs.to_be_bytes());
        let ip = match source.to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        ctx.update(&ip.octets());
        let tag = ctx.sign();
        let mut out = [0u8; NONCE_HASH_BYTES];
        for (o, b) in out.iter_mut().zip(tag.as_ref()) {
            *o = *b;
        }
        out
    }

    /// The nonce for a challenge sent to `source` at `secs` (seconds since the epoch).
    pub fn nonce(&self, source: IpAddr, secs: u64) -> Nonce {
        let secs = secs as u32;
        self.persona()
            .nonce_style()
            .encode(secs, &self.hash(secs, source))
    }

    /// Whether `nonce` is one we sent to `source` within [`NONCE_LIFETIME`] before `now_secs`.
    pub fn is_own_nonce(&self, nonce: &str, source: IpAddr, now_secs: u64) -> bool {
        let style = self.persona().nonce_style();
        let Some(secs) = style.time_of(nonce) else {
            return false;
        };
        // Nonces carry 32 bits of time; compare within the same era.
        let now = now_secs as u32;
        let age = now.wrapping_sub(secs);
        if u64::from(age) > NONCE_LIFETIME.as_secs() {
            return false;
        }
        let expected = style.encode(secs, &self.hash(secs, source));
        ring_eq(expected.value.as_bytes(), nonce.as_bytes())
    }

    /// Checks a Digest answer from `source` to a request with `method`.
    pub fn check(
        &self,
        creds: &Credentials<'_>,
        method: &str,
        source: IpAddr,
        now_secs: u64,
    ) -> Checked {
        let own_nonce = creds
            .nonce
            .is_some_and(|n| self.is_own_nonce(n, source, now_secs));
        let trap_password_matched = own_nonce
            && creds
                .matching_password(&self.config.trap_passwords, method)
                .is_some();
        Checked {
            own_nonce,
            trap_password_matched,
        }
    }

    /// Decides a REGISTER with credentials from `source`: accepted when they match a trap
    /// password, or when `--sip-accept-register-after` failures with our nonce came before;
    /// otherwise counted as one more failure. Answers without our nonce are refused and not
    /// counted. An accepted source is registered for the time granted.
    pub fn register(
        &self,
        source: IpAddr,
        checked: Checked,
        requested_expires: Option<u32>,
        now: Instant,
    ) -> Decision {
        if !checked.own_nonce {
            return Decision::Refuse;
        }
        let accept = checked.trap_password_matched || self.count_failure(source, now);
        if !accept {
            return Decision::Refuse;
        }
        let expires = match requested_expires {
            None => DEFAULT_EXPIRES,
            Some(0) => 0,
            Some(n) => n.clamp(MIN_EXPIRES, DEFAULT_EXPIRES),
        };
        let Ok(mut registered) = self.registered.lock() else {
            return Decision::Refuse;
        };
        if expires == 0 {
            registered.remove(&source);
        } else {
            if registered.len() >= MAX_TRACKED_SOURCES && !registered.contains_key(&source) {
                registered.retain(|_, until| *until > now);
                if registered.len() >= MAX_TRACKED_SOURCES {
                    if let Some(soonest) = registered
                        .iter()
                        .min_by_key(|(_, until)| **until)
                        .map(|(ip, _)| *ip)
                    {
                        registered.remove(&soonest);
                    }
                }
            }
            registered.insert(source, now + Duration::from_secs(u64::from(expires)));
        }
        Decision::Accept(expires)
    }

    /// Counts a failed attempt from `source`; true when the attempts before it reached the
    /// configured number, so this one is to be accepted (and the count starts again).
    fn count_failure(&self, source: IpAddr, now: Instant) -> bool {
        let Some(after) = self.config.accept_after else {
            return false;
        };
        let Ok(mut failures) = self.failures.lock() else {
            return false;
        };
        if failures.len() >= MAX_TRACKED_SOURCES && !failures.contains_key(&source) {
            failures.retain(|_, f| now.saturating_duration_since(f.last) < FAILURES_KEPT);
            if failures.len() >= MAX_TRACKED_SOURCES {
                if let Some(oldest) = failures
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(ip, _)| *ip)
                {
                    failures.remove(&oldest);
                }
            }
        }
        let f = failures.entry(source).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(f.last) >= FAILURES_KEPT {
            f.count = 0;
        }
        f.last = now;
        if f.count >= after {
            failures.remove(&source);
            true
        } else {
            f.count += 1;
            false
        }
    }

    /// Whether `source` holds a registration at `now`.
    pub fn is_registered(&self, source: IpAddr, now: Instant) -> bool {
        let Ok(mut registered) = self.registered.lock() else {
            return false;
        };
        match registered.get(&source) {
            Some(until) if *until > now => true,
            Some(_) => {
                registered.remove(&source);
                false
            }
            None => false,
        }
    }
}

/// Compares in time independent of where the first difference is.
fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::{AuthHeader, digest_response, parse};

    const NOW: u64 = 1_764_500_000;

    fn trap(accept_after: Option<u32>, passwords: &[&str], persona: Persona) -> Trap {
        Trap::new(TrapConfig {
            persona,
            accept_after,
            trap_passwords: passwords.iter().map(|p| p.to_string()).collect(),
        })
    }

    fn answer(nonce: &str, password: &str) -> String {
        let response = digest_response(
            "100",
            "asterisk",
            password,
            "REGISTER",
            "sip:192.0.2.1",
            nonce,
            None,
        );
        format!(
            "Digest username=\"100\",realm=\"asterisk\",nonce=\"{nonce}\",uri=\"sip:192.0.2.1\",response=\"{response}\",algorithm=MD5"
        )
    }

    #[test]
    fn our_nonces_are_recognised_for_their_source_and_lifetime_only() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        for persona in [
            Persona::Default,
            Persona::Asterisk,
            Persona::Kamailio,
            Persona::Cisco,
        ] {
            let t = trap(None, &[], persona);
            let n = t.nonce(ip, NOW).value;
            assert!(t.is_own_nonce(&n, ip, NOW), "{persona:?}");
            assert!(t.is_own_nonce(&n, ip, NOW + 300), "{persona:?}");
            assert!(!t.is_own_nonce(&n, ip, NOW + 301), "{persona:?}");
            assert!(!t.is_own_nonce(&n, other, NOW), "{persona:?}");
            // Another process's key.
            let t2 = trap(None, &[], persona);
            assert!(!t2.is_own_nonce(&n, ip, NOW), "{persona:?}");
        }
    }

    #[test]
    fn a_trap_password_is_accepted_at_once_and_others_after_n_failures() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let now = Instant::now();
        let t = trap(Some(3), &["1234"], Persona::Default);
        let nonce = t.nonce(ip, NOW).value;
        let check = |pw: &str| {
            let value = answer(&nonce, pw);
            let c = parse(AuthHeader::Authorization, &value);
            t.check(&c, "REGISTER", ip, NOW)
        };
        let trap_hit = check("1234");
        assert_eq!(
            trap_hit,
            Checked {
                own_nonce: true,
                trap_password_matched: true
            }
        );
        assert_eq!(t.register(ip, trap_hit, None, now), Decision::Accept(3600));
        assert!(t.is_registered(ip, now));

        let other: IpAddr = "203.0.113.9".parse().unwrap();
        let nonce = t.nonce(other, NOW).value;
        let value = answer(&nonce, "wrong");
        let c = parse(AuthHeader::Authorization, &value);
        let wrong = t.check(&c, "REGISTER", other, NOW);
        assert!(wrong.own_nonce && !wrong.trap_password_matched);
        for _ in 0..3 {
            assert_eq!(t.register(other, wrong, Some(120), now), Decision::Refuse);
        }
        assert!(!t.is_registered(other, now));
        assert_eq!(
            t.register(other, wrong, Some(120), now),
            Decision::Accept(120)
        );
        assert!(t.is_registered(other, now + Duration::from_secs(119)));
        assert!(!t.is_registered(other, now + Duration::from_secs(120)));
        // Expires is kept within bounds; 0 unregisters.
        assert_eq!(t.register(ip, trap_hit, Some(5), now), Decision::Accept(60));
        assert_eq!(t.register(ip, trap_hit, Some(0), now), Decision::Accept(0));
        assert!(!t.is_registered(ip, now));
    }

    #[test]
    fn answers_without_our_nonce_never_count_or_register() {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t = trap(Some(0), &["1234"], Persona::Default);
        let value = answer("0123456789abcdef0123456789abcdef", "1234");
        let c = parse(AuthHeader::Authorization, &value);
        let checked = t.check(&c, "REGISTER", ip, NOW);
        assert!(!checked.own_nonce && !checked.trap_password_matched);
        assert_eq!(
            t.register(ip, checked, None, Instant::now()),
            Decision::Refuse
        );
        // Without fake success configured, even our own nonce is refused.
        let t = trap(None, &[], Persona::Default);
        let value = answer(&t.nonce(ip, NOW).value, "x");
        let checked = t.check(
            &parse(AuthHeader::Authorization, &value),
            "REGISTER",
            ip,
            NOW,
        );
        assert!(checked.own_nonce);
        assert_eq!(
            t.register(ip, checked, None, Instant::now()),
            Decision::Refuse
        );
    }

    #[test]
    fn the_maps_stay_within_their_cap() {
        let t = trap(Some(5), &[], Persona::Default);
        let now = Instant::now();
        let checked = Checked {
            own_nonce: true,
            trap_password_matched: false,
        };
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 100) {
            let ip = IpAddr::from(i.to_be_bytes());
            t.register(ip, checked, None, now);
        }
        assert!(t.failures.lock().unwrap().len() <= MAX_TRACKED_SOURCES);
        let t = trap(Some(0), &[], Persona::Default);
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 100) {
            let ip = IpAddr::from(i.to_be_bytes());
            assert_eq!(t.register(ip, checked, None, now), Decision::Accept(3600));
        }
        assert!(t.registered.lock().unwrap().len() <= MAX_TRACKED_SOURCES);
    }

    #[test]
    fn settings_are_checked_and_the_password_file_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "# traps\n1234\n\npassword\r\n1234\n").unwrap();
        let c = TrapConfig::resolve(RawTrapConfig {
            persona: Some("Asterisk".into()),
            accept_after: Some("3".into()),
            trap_passwords: Some(file),
        })
        .unwrap();
        assert_eq!(c.persona, Persona::Asterisk);
        assert_eq!(c.accept_after, Some(3));
        assert_eq!(c.trap_passwords, ["1234", "password"]);
        let bad = |raw: RawTrapConfig| TrapConfig::resolve(raw).unwrap_err().option;
        assert_eq!(
            bad(RawTrapConfig {
                persona: Some("opensips".into()),
                ..Default::default()
            }),
            "--sip-persona"
        );
        assert_eq!(
            bad(RawTrapConfig {
                accept_after: Some("-1".into()),
                ..Default::default()
            }),
            "--sip-accept-register-after"
        );
        assert_eq!(
            bad(RawTrapConfig {
                trap_passwords: Some(dir.path().join("missing")),
                ..Default::default()
            }),
            "--sip-trap-passwords"
        );
    }
}
