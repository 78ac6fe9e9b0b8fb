//! Database writer throughput: events per second through `Writer::write_batch`, into a database
//! that already holds events (so index pages are not all hot), with few and with many distinct
//! numbers; and through `Writer::write_batch_behind`, the path a writer with a backlog takes
//! (summaries written at the upkeep tick, here once per 100,000 events, or sooner when
//! `MAX_PENDING_KEYS` actors wait). Run: `cargo bench --bench store`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sentrypeer::event::{CollectedMethod, Event, Origin, Transport, format_timestamp};

const BATCH: usize = 4096;

fn events(n: usize, start: u64, numbers: u64) -> Vec<Arc<Event>> {
    let now = SystemTime::now();
    (0..n as u64)
        .map(|k| {
            let i = start + k;
            Arc::new(Event {
                timestamp: format_timestamp(now + Duration::from_micros(i)),
                uuid: uuid::Uuid::new_v4(),
                node_id: uuid::Uuid::nil(),
                collected_method: CollectedMethod::Passive,
                transport: Transport::Udp,
                source: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + (i % 5000) as u32)), 5060),
                destination: "127.0.0.1:5060".parse().unwrap(),
                called_number: format!("{}", 441_000_000_000u64 + (i * 2_654_435_761) % numbers),
                method: "INVITE".into(),
                user_agent: "friendly-scanner".into(),
                message: "INVITE sip:100@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bK1\r\nFrom: <sip:100@198.51.100.9>;tag=1\r\nTo: <sip:100@198.51.100.1>\r\nCall-ID: 1@198.51.100.9\r\nCSeq: 1 INVITE\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n".repeat(2),
                origin: Origin::Local,
                signed: None,
                sip_auth: None,
                registered_attacker: false,
            })
        })
        .collect()
}

/// How the benchmarked writer takes each batch.
#[derive(Clone, Copy)]
enum Path {
    /// `write_batch`: the summaries with every batch.
    EveryBatch,
    /// `write_batch_behind`, with the upkeep tick's flush once per this many batches.
    Behind { upkeep_batches: u64 },
}

fn bench_path(c: &mut Criterion, group: &str, path: Path) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    for numbers in [100u64, 250_000] {
        let dir = tempfile::tempdir().unwrap();
        let mut w = sentrypeer::store::open(&dir.path().join("b.db"))
            .unwrap()
            .writer;
        // Start from a database that already holds 100,000 events.
        for k in 0..25 {
            w.write_batch(&events(BATCH, k * BATCH as u64, numbers))
                .unwrap();
        }
        let mut next = 25 * BATCH as u64;
        let mut written = 0u64;
        g.bench_function(format!("batch_of_{BATCH}_numbers_{numbers}"), |b| {
            b.iter_batched(
                || {
                    next += BATCH as u64;
                    events(BATCH, next, numbers)
                },
                |batch| match path {
                    Path::EveryBatch => w.write_batch(&batch).unwrap(),
                    Path::Behind { upkeep_batches } => {
                        w.write_batch_behind(&batch).unwrap();
                        written += 1;
                        if written % upkeep_batches == 0 {
                            w.flush_summaries().unwrap();
                        }
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn bench_writer(c: &mut Criterion) {
    bench_path(c, "sqlite_writer", Path::EveryBatch);
    // Upkeep once per 100,000 events: the tick's one second at 100,000 events a second.
    let upkeep_batches = 100_000 / BATCH as u64;
    bench_path(c, "sqlite_writer_behind", Path::Behind { upkeep_batches });
}

criterion_group!(benches, bench_writer);
criterion_main!(benches);
