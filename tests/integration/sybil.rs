//! A hostile peer that cycles through fresh identities: for each, a new key and a new libp2p
//! swarm that dials the target, floods it with catch-up requests, answers the target's own
//! catch-up requests with pages of made-up events signed under that identity's key (so they
//! pass every check a receiver applies, as a real malicious node's would), holds on for a
//! moment and goes. Used
//! by `p2p_bounds` and by the `p2p_hostile` benchmark (which includes this file), so it depends
//! on nothing else in the test crate.

use std::time::{Duration, Instant, SystemTime};

use libp2p::futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, SwarmBuilder, identity, noise, tcp, yamux};
use sentrypeer::p2p::catchup::{self, Cursor, Request, Response};
use sentrypeer::p2p::validate::Signer;
use tokio::task::JoinSet;

/// What the hostile peer does with each identity.
#[derive(Debug, Clone)]
pub struct Flood {
    /// Fresh identities, one after another (`concurrency` at a time).
    pub identities: usize,
    pub concurrency: usize,
    /// Catch-up page requests each identity sends as soon as it is connected.
    pub requests: usize,
    /// How long each identity stays connected once its requests are answered, serving the
    /// target's catch-up requests meanwhile.
    pub hold: Duration,
    /// Dials of one identity refused (or failed) that are tried again, 50 ms later.
    pub retries: usize,
    /// How long one identity may take at most.
    pub timeout: Duration,
}

/// What the hostile peer saw, over all identities.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub identities: usize,
    /// Identities whose connection was established.
    pub connected: usize,
    /// Identities whose dials all failed (refused by the target, or timed out).
    pub dial_failed: usize,
    /// Dials that failed, retries included.
    pub dials_failed: u64,
    /// Identities that received at least one page.
    pub served_identities: usize,
    pub pages_received: u64,
    pub events_received: u64,
    /// Answers that refused a request.
    pub refusals_received: u64,
    /// Requests that got no answer (connection closed, timeout).
    pub requests_failed: u64,
    /// Catch-up pages the target asked of us, and the made-up events we gave it.
    pub pages_given: u64,
    pub events_given: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.identities += o.identities;
        self.connected += o.connected;
        self.dial_failed += o.dial_failed;
        self.dials_failed += o.dials_failed;
        self.served_identities += o.served_identities;
        self.pages_received += o.pages_received;
        self.events_received += o.events_received;
        self.refusals_received += o.refusals_received;
        self.requests_failed += o.requests_failed;
        self.pages_given += o.pages_given;
        self.events_given += o.events_given;
    }
}

/// Runs the flood against `target` to the end.
pub async fn run(target: Multiaddr, flood: Flood) -> Tally {
    let mut total = Tally::default();
    let mut tasks = JoinSet::new();
    let mut started = 0;
    while started < flood.identities || !tasks.is_empty() {
        while started < flood.identities && tasks.len() < flood.concurrency {
            tasks.spawn(one(target.clone(), flood.clone()));
            started += 1;
        }
        if let Some(Ok(t)) = tasks.join_next().await {
            total.add(&t);
        }
    }
    total
}

/// A made-up event, valid by every rule a receiver applies (public source, fresh timestamp,
/// the signer's node id), in its signed envelope.
fn made_up_event(signer: &Signer, n: u64) -> String {
    let event = serde_json::json!({
        "app_name": "sentrypeer",
        "app_version": "hostile",
        "event_timestamp": sentrypeer::event::format_timestamp(SystemTime::now()),
        "event_uuid": uuid::Uuid::new_v4().hyphenated().to_string(),
        "created_by_node_id": signer.node_id().hyphenated().to_string(),
        "collected_method": "passive",
        "transport_type": "UDP",
        "source_ip": format!("8.8.{}.{}:5060", (n >> 8) & 0xff, n & 0xff),
        "destination_ip": "0.0.0.0:5060",
        "called_number": format!("9{:08}", n % 100_000_000),
        "sip_method": "OPTIONS",
        "sip_user_agent": "friendly-scanner",
        "sip_message": "OPTIONS sip:100@198.51.100.10 SIP/2.0\r\n\r\n",
    })
    .to_string();
    String::from_utf8(signer.seal(event.as_bytes())).expect("an envelope is JSON text")
}

type Behaviour = request_response::cbor::Behaviour<Request, Response>;

/// One identity, from dial to goodbye.
async fn one(target: Multiaddr, flood: Flood) -> Tally {
    let mut t = Tally {
        identities: 1,
        ..Tally::default()
    };
    let key = identity::Keypair::generate_ed25519();
    let signer = Signer::new(&key).expect("an ed25519 key");
    let Ok(builder) = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
    else {
        return t;
    };
    let Ok(builder) = builder.with_behaviour(|_| {
        Behaviour::with_codec(
            request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(catchup::MAX_REQUEST_BYTES)
                .set_response_size_maximum(catchup::MAX_RESPONSE_BYTES),
            [(
                StreamProtocol::new(catchup::PROTOCOL),
                ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
        )
    });
    let mut swarm = builder
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    if swarm.dial(target.clone()).is_err() {
        t.dial_failed = 1;
        return t;
    }
    let mut retries = flood.retries;
    let deadline = tokio::time::Instant::now() + flood.timeout;
    let mut outstanding = 0usize;
    let mut answered_at: Option<Instant> = None;
    let mut made = 0u64;
    let start = Cursor {
        since: catchup::horizon(SystemTime::now()),
        after: None,
    };
    loop {
        if t.connected == 1 && outstanding == 0 {
            let at = *answered_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= flood.hold {
                break;
            }
        }
        // Wake for the next event, or when the hold (once answered) or the whole time is up.
        let hold_ends = answered_at
            .map(|at| tokio::time::Instant::from_std(at + flood.hold))
            .unwrap_or(deadline)
            .min(deadline);
        let event = tokio::select! {
            e = swarm.select_next_some() => e,
            _ = tokio::time::sleep_until(hold_ends) => {
                if hold_ends >= deadline {
                    break;
                }
                continue;
            }
        };
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if t.connected == 0 => {
                t.connected = 1;
                for _ in 0..flood.requests {
                    swarm.behaviour_mut().send_request(
                        &peer_id,
                        Request::CatchUp {
                            cursor: start.clone(),
                            limit: catchup::MAX_PAGE_EVENTS as u32,
                        },
                    );
                }
                outstanding = flood.requests;
            }
            SwarmEvent::OutgoingConnectionError { .. } => {
                t.dials_failed += 1;
                if retries == 0 {
                    t.dial_failed = 1;
                    break;
                }
                retries -= 1;
                // A refused identity dials again a moment later, as a real attacker would.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if swarm.dial(target.clone()).is_err() {
                    t.dial_failed = 1;
                    break;
                }
            }
            SwarmEvent::ConnectionClosed { .. } => break,
            SwarmEvent::Behaviour(request_response::Event::Message { message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        let response = match request {
                            Request::CatchUp { cursor, limit } => {
                                let n = (limit as usize).min(catchup::MAX_PAGE_EVENTS);
                                let events: Vec<String> = (0..n)
                                    .map(|_| {
                                        made += 1;
                                        made_up_event(&signer, made)
                                    })
                                    .collect();
                                t.pages_given += 1;
                                t.events_given += n as u64;
                                Response::Events {
                                    events,
                                    next: Some(cursor),
                                }
                            }
                            Request::Peers => Response::Peers { peers: vec![] },
                        };
                        let _ = swarm.behaviour_mut().send_response(channel, response);
                    }
                    request_response::Message::Response { response, .. } => {
                        outstanding = outstanding.saturating_sub(1);
                        match response {
                            Response::Events { events, .. } => {
                                t.pages_received += 1;
                                t.events_received += events.len() as u64;
                                t.served_identities = 1;
                            }
                            Response::Refused { .. } => t.refusals_received += 1,
                            Response::Peers { .. } => {}
                        }
                    }
                }
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) => {
                outstanding = outstanding.saturating_sub(1);
                t.requests_failed += 1;
            }
            _ => {}
        }
    }
    t
}
