//! Trains the zstd dictionary that event records are compressed with
//! (`src/store/dictionaries/events-N.zdict`): `cargo run --example train_dictionary -- OUT`.
//!
//! The training set is made from the bundled samples alone (assets/samples): each sample
//! many times over, its ids and texts replaced by random ones, pretty-printed and compact,
//! behind a typical set of stored headers, laid out exactly as a record's compressed part is
//! (the postcard-encoded headers, then the body). Deterministic: the same samples give the
//! same dictionary. A new dictionary gets a new number; records name the one they used, so
//! every published dictionary stays in the binary.

use std::path::PathBuf;

const DICTIONARY_BYTES: usize = 32 * 1024;
const ROUNDS: usize = 100;

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: train_dictionary OUT_FILE");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let ids = regex::Regex::new(r"[0-9a-f]{24}").unwrap();
    let texts = regex::Regex::new(r#""(description|name|note|email)": "([^"]*)""#).unwrap();
    let mut seed = 0x5eed_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut training = Vec::new();
    for round in 0..ROUNDS {
        for path in &paths {
            let event_type = path.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(path).unwrap();
            let text = ids.replace_all(&text, |_: &regex::Captures| {
                format!(
                    "{:08x}{:016x}",
                    0x6000_0000 + random() % 0x1000_0000,
                    random()
                )
            });
            let text = texts.replace_all(&text, |c: &regex::Captures| {
                format!("\"{}\": \"{} {:x}\"", &c[1], &c[2], random() % 1_000_000)
            });
            let mut body = text.into_owned().into_bytes();
            if round % 2 == 1 {
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                body = serde_json::to_vec(&json).unwrap();
            }
            let headers: Vec<(String, String)> = vec![
                ("host".into(), "studio.example.com".into()),
                ("user-agent".into(), "Clockify-Webhook/1.0".into()),
                ("content-length".into(), body.len().to_string()),
                ("accept".into(), "application/json, */*".into()),
                ("accept-encoding".into(), "gzip".into()),
                ("content-type".into(), "application/json".into()),
                ("clockify-signature".into(), "[redacted]".into()),
                ("clockify-webhook-event-type".into(), event_type),
                (
                    "x-forwarded-for".into(),
                    format!(
                        "18.{}.{}.{}",
                        random() % 256,
                        random() % 256,
                        random() % 256
                    ),
                ),
                ("x-forwarded-proto".into(), "https".into()),
            ];
            let mut sample = postcard::to_allocvec(&headers).unwrap();
            sample.extend_from_slice(&body);
            training.push(sample);
        }
    }
    let dictionary = zstd::dict::from_samples(&training, DICTIONARY_BYTES).unwrap();
    std::fs::write(&out, &dictionary).unwrap();
    println!(
        "wrote {out}: {} bytes from {} samples",
        dictionary.len(),
        training.len()
    );
}
