//! Token parsing and verification: any string is refused or accepted, never a panic.
#![no_main]

use std::sync::LazyLock;

use clockify_studio::clockify::token::{Expiry, TokenVerifier};
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<TokenVerifier> = LazyLock::new(|| {
    TokenVerifier::new(
        include_str!("../../tests/fixtures/test-signing-key.pub.pem"),
        "addon-fuzz",
    )
    .expect("the test key")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = VERIFIER.verify(Some(text), Expiry::Required, "fuzz");
    let _ = VERIFIER.verify(Some(text), Expiry::Optional, "fuzz");
});
