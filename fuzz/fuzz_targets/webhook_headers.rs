//! Standard Webhooks headers and bearer secrets: input lines are webhook-id,
//! webhook-timestamp, webhook-signature, bearer, then the body.
#![no_main]

use clockify_studio::ingest::custom::{Credentials, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(5, '\n');
    let mut next = || lines.next().filter(|l| !l.is_empty());
    let credentials = Credentials {
        webhook_id: next(),
        webhook_timestamp: next(),
        webhook_signature: next(),
        bearer: next(),
        event_type: None,
    };
    let body = next().unwrap_or("").as_bytes();
    let secrets = [
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
        "not base64 !".to_string(),
    ];
    let _ = verify(&credentials, body, &secrets, 1_700_000_000);
});
