//! `cargo bench --bench storage`: the storage bound the HTTP path is measured against —
//! redb alone committing N records of 1.5 KB per durable transaction (the shape of an
//! ingest batch: event, type index and dedupe rows), single-threaded. Prints records/s
//! and the commit time per batch size.

use std::time::Instant;

use redb::{Database, Durability, TableDefinition};

const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
const BY_TYPE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events_by_type");
const DEDUPE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("event_dedupe");

fn main() {
    let seconds: f64 = std::env::var("STORAGE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let body = vec![b'x'; 1500];
    for batch in [1usize, 16, 64, 256] {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("bench.redb")).unwrap();
        let started = Instant::now();
        let (mut records, mut commits) = (0u64, 0u64);
        while started.elapsed().as_secs_f64() < seconds {
            let mut wtx = db.begin_write().unwrap();
            wtx.set_durability(Durability::Immediate).unwrap();
            {
                let mut events = wtx.open_table(EVENTS).unwrap();
                let mut by_type = wtx.open_table(BY_TYPE).unwrap();
                let mut dedupe = wtx.open_table(DEDUPE).unwrap();
                for _ in 0..batch {
                    let id = uuid::Uuid::now_v7();
                    let key = [b"workspace-0000000000000000\0".as_slice(), id.as_bytes()].concat();
                    events.insert(key.as_slice(), body.as_slice()).unwrap();
                    let type_key = [key.as_slice(), b"NEW_TIME_ENTRY"].concat();
                    by_type.insert(type_key.as_slice(), [].as_slice()).unwrap();
                    dedupe.insert(&id.as_bytes()[..], &key[..24]).unwrap();
                    records += 1;
                }
            }
            wtx.commit().unwrap();
            commits += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "storage batch={batch} records_per_s={:.0} commit_ms={:.2}",
            records as f64 / elapsed,
            elapsed * 1000.0 / commits as f64
        );
    }
}
