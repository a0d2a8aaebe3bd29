//! `cargo bench --bench storage`: the storage bound the HTTP path is measured against —
//! redb alone committing N records of 1.5 KB per durable transaction (event and type-index
//! rows, plus a dedupe row keyed by a content hash), single-threaded. Prints records/s and
//! the commit time per batch size. `STORAGE_SEQUENTIAL_DEDUPE=1` keys the dedupe rows in
//! time order instead: the gap between the two runs is why the store writes its dedupe
//! rows in bulk (src/store/dedupe.rs).

use std::time::Instant;

use redb::{Database, Durability, TableDefinition};
use sha2::Digest;

const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
const BY_TYPE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events_by_type");
const DEDUPE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("event_dedupe");

fn main() {
    let seconds: f64 = std::env::var("STORAGE_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let body = vec![b'x'; 1500];
    let random_dedupe = std::env::var("STORAGE_SEQUENTIAL_DEDUPE").is_err();
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
                    // Dedupe keys are content hashes: random, unlike the time-ordered ids.
                    let digest: [u8; 32] = sha2::Sha256::digest(id.as_bytes()).into();
                    let dedupe_key = if random_dedupe {
                        digest.to_vec()
                    } else {
                        id.as_bytes().to_vec()
                    };
                    dedupe.insert(dedupe_key.as_slice(), &key[..24]).unwrap();
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
