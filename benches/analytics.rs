//! Analytics answers over a million events: the windows the API serves (`/user-agents`,
//! `/called-numbers`, `/source-ips`, `/probes`), read from the buckets the writer keeps.
//! The million events are written through `Writer::write_batch`, from 5,000 sources with 300
//! user agents, 5 methods and 100,000 numbers, once spread over the last 30 days and once
//! over the last 24 hours (every minute bucket then full of numbers).
//! Run: `cargo bench --bench analytics`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use sentrypeer::event::{CollectedMethod, Event, Origin, Transport, format_timestamp};
use sentrypeer::store::analytics::{self, Dim, Window};

const EVENTS: u64 = 1_000_000;
const BATCH: u64 = 4096;
const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn event(i: u64, now: SystemTime, spread: Duration) -> Arc<Event> {
    // Oldest first, evenly over the spread.
    let at = now - spread + Duration::from_micros(spread.as_micros() as u64 / EVENTS * i);
    let methods = ["INVITE", "OPTIONS", "REGISTER", "ACK", "BYE"];
    Arc::new(Event {
        timestamp: format_timestamp(at),
        uuid: uuid::Uuid::new_v4(),
        node_id: uuid::Uuid::nil(),
        collected_method: CollectedMethod::Passive,
        transport: Transport::Udp,
        source: SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(0x6440_0000 + ((i * 7919) % 5000) as u32)),
            5060,
        ),
        destination: "127.0.0.1:5060".parse().unwrap(),
        called_number: format!("{}", 441_000_000_000u64 + (i * 2_654_435_761) % 100_000),
        method: methods[(i % 5) as usize].into(),
        user_agent: format!("scanner-{}", (i * 31) % 300),
        message: "OPTIONS sip:100@198.51.100.1 SIP/2.0\r\n\r\n".into(),
        origin: Origin::Local,
        signed: None,
        sip_auth: None,
        registered_attacker: false,
    })
}

fn bench_spread(c: &mut Criterion, name: &str, spread: Duration, windows: [Window; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let mut w = sentrypeer::store::open(&path).unwrap().writer;
    let now = SystemTime::now();
    let mut i = 0;
    while i < EVENTS {
        let batch: Vec<_> = (i..(i + BATCH).min(EVENTS))
            .map(|k| event(k, now, spread))
            .collect();
        w.write_batch(&batch).unwrap();
        i += BATCH;
    }
    drop(w);
    let pool = sentrypeer::store::ReadPool::new(&path);
    let now_ms = sentrypeer::actors::now_ms();
    let total: i64 = pool
        .with(|c| analytics::series(c, None, windows[0], now_ms))
        .unwrap()
        .iter()
        .sum();
    assert!(total > 990_000, "{total} probes in the window");

    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for window in windows {
        for (what, dim) in [
            ("user_agents", Dim::UserAgent),
            ("called_numbers", Dim::Number),
            ("source_ips", Dim::SourceIp),
            ("networks", Dim::Network),
        ] {
            g.bench_function(format!("{what}_{}", window.as_str()), |b| {
                b.iter(|| {
                    pool.with(|c| {
                        let top = analytics::top(c, dim, window, now_ms, 100)?;
                        let series = analytics::series(c, None, window, now_ms)?;
                        Ok((top, series))
                    })
                    .unwrap()
                })
            });
        }
        g.bench_function(format!("one_number_{}", window.as_str()), |b| {
            b.iter(|| {
                pool.with(|c| {
                    let one = analytics::one(c, Dim::Number, "441000000000", window, now_ms)?;
                    let series =
                        analytics::series(c, Some((Dim::Number, "441000000000")), window, now_ms)?;
                    Ok((one, series))
                })
                .unwrap()
            })
        });
    }
    g.finish();
}

fn bench_windows(c: &mut Criterion) {
    bench_spread(
        c,
        "analytics_1m_events_over_30d",
        MONTH,
        [Window::Month, Window::Week],
    );
    bench_spread(
        c,
        "analytics_1m_events_over_24h",
        DAY,
        [Window::Day, Window::Hour],
    );
}

criterion_group!(benches, bench_windows);
criterion_main!(benches);
