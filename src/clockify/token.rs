//! Verification of Clockify-signed JWTs (PLATFORM.md §5): RS256 with the configured key only,
//! `iss = clockify`, `type = addon`, `sub = <add-on key>`, and the times wherever present: `exp`
//! not past (with [`EXPIRY_LEEWAY_SECS`]), `nbf` not ahead and `iat` not in the future (with
//! [`CLOCK_SKEW_SECS`]: a token Clockify has just issued must not be refused because its clock
//! runs ahead of ours). The same rules hold for every token kind (user, lifecycle,
//! installation, webhook).
//! Verified tokens are cached by hash: RS256 verification costs ~0.35 ms and Clockify sends
//! the same webhook token on every delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Entries kept before the cache is emptied and refilled; bounds memory.
const CACHE_CAPACITY: usize = 10_000;
/// Seconds a token may be used past its `exp`.
pub const EXPIRY_LEEWAY_SECS: u64 = 5;
/// Seconds Clockify's clock may run ahead of ours: how far in the future `nbf` and `iat` may be.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Claims of every Clockify token kind; absent claims are `None` (PLATFORM.md §5.1).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    #[serde(rename = "type")]
    pub token_type: Option<String>,
    pub workspace_id: Option<String>,
    pub addon_id: Option<String>,
    pub user: Option<String>,
    pub backend_url: Option<String>,
    pub reports_url: Option<String>,
    pub locations_url: Option<String>,
    pub screenshots_url: Option<String>,
    pub pto_url: Option<String>,
    pub language: Option<String>,
    pub theme: Option<String>,
    pub workspace_role: Option<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
}

impl Claims {
    pub fn is_admin(&self) -> bool {
        matches!(
            self.workspace_role.as_deref(),
            Some("OWNER" | "WORKSPACE_ADMIN")
        )
    }
}

/// Why a token was refused; `reason()` labels the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token header is missing")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token is not signed with RS256")]
    Algorithm,
    #[error("the token signature does not verify with Clockify's key")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token has no expiry")]
    NoExpiry,
    #[error("the token is not valid yet (nbf is ahead of this server's clock)")]
    NotYetValid,
    #[error("the token was issued in the future (iat is ahead of this server's clock)")]
    IssuedInFuture,
    #[error("the token was not issued by Clockify")]
    Issuer,
    #[error("the token is not an add-on token")]
    Type,
    #[error("the token was issued for another add-on")]
    Subject,
}

impl TokenError {
    /// A well-signed token refused only for its times (expired, or not valid yet).
    pub fn is_time(self) -> bool {
        matches!(
            self,
            TokenError::Expired | TokenError::NotYetValid | TokenError::IssuedInFuture
        )
    }

    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::Signature => "signature",
            TokenError::Expired => "expired",
            TokenError::NoExpiry => "no_expiry",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::Issuer => "issuer",
            TokenError::Type => "type",
            TokenError::Subject => "subject",
        }
    }
}

/// Whether a token kind must carry `exp` (user tokens do; installation and webhook tokens
/// are documented as non-expiring, lifecycle tokens are undocumented).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Optional,
    Required,
}

pub struct TokenVerifier {
    key: DecodingKey,
    addon_key: String,
    cache: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
}

impl TokenVerifier {
    pub fn new(public_key_pem: &str, addon_key: &str) -> Result<TokenVerifier, String> {
        let key = DecodingKey::from_rsa_pem(public_key_pem.as_bytes())
            .map_err(|e| format!("not an RSA public key in PEM form: {e}"))?;
        Ok(TokenVerifier {
            key,
            addon_key: addon_key.to_string(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies a token and returns its claims. Failures are counted by reason in
    /// `token_verification_failures_total{kind, reason}`.
    pub fn verify(
        &self,
        token: Option<&str>,
        expiry: Expiry,
        kind: &'static str,
    ) -> Result<Arc<Claims>, TokenError> {
        let result = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::Missing)
            .and_then(|t| self.verify_present(t, expiry));
        if let Err(err) = &result {
            metrics::counter!("token_verification_failures_total", "kind" => kind, "reason" => err.reason())
                .increment(1);
        }
        result
    }

    fn verify_present(&self, token: &str, expiry: Expiry) -> Result<Arc<Claims>, TokenError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        let cached = self
            .cache
            .lock()
            .expect("token cache lock")
            .get(&digest)
            .cloned();
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.decode(token)?);
                let mut cache = self.cache.lock().expect("token cache lock");
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(digest, claims.clone());
                claims
            }
        };
        // Checked on every use, cached or not: a cached token still expires on time, and one
        // cached while not yet valid is refused until its time comes.
        check_times(&claims, expiry, now)?;
        Ok(claims)
    }

    fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Algorithm);
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        // Expiry, issuer and subject are checked below so each failure has its own reason.
        validation.validate_exp = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.iss.as_deref() != Some("clockify") {
            return Err(TokenError::Issuer);
        }
        if claims.token_type.as_deref() != Some("addon") {
            return Err(TokenError::Type);
        }
        if claims.sub.as_deref() != Some(self.addon_key.as_str()) {
            return Err(TokenError::Subject);
        }
        Ok(claims)
    }
}

/// `exp`, `nbf` and `iat` against `now` (Unix seconds).
fn check_times(claims: &Claims, expiry: Expiry, now: u64) -> Result<(), TokenError> {
    match claims.exp {
        Some(exp) if exp.saturating_add(EXPIRY_LEEWAY_SECS) < now => {
            return Err(TokenError::Expired);
        }
        None if expiry == Expiry::Required => return Err(TokenError::NoExpiry),
        _ => {}
    }
    let ahead = |time: Option<u64>| time.is_some_and(|t| t > now.saturating_add(CLOCK_SKEW_SECS));
    if ahead(claims.nbf) {
        return Err(TokenError::NotYetValid);
    }
    if ahead(claims.iat) {
        return Err(TokenError::IssuedInFuture);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<u64>, nbf: Option<u64>, iat: Option<u64>) -> Claims {
        Claims {
            exp,
            nbf,
            iat,
            ..Claims::default()
        }
    }

    #[test]
    fn times_are_checked_with_the_stated_allowance() {
        let now = 1_800_000_000;
        let skew = CLOCK_SKEW_SECS;
        let leeway = EXPIRY_LEEWAY_SECS;
        let check = |c: Claims| check_times(&c, Expiry::Optional, now);
        assert_eq!(check(claims(None, None, None)), Ok(()));
        assert_eq!(check(claims(Some(now - leeway), None, None)), Ok(()));
        assert_eq!(
            check(claims(Some(now - leeway - 1), None, None)),
            Err(TokenError::Expired)
        );
        assert_eq!(check(claims(None, Some(now + skew), None)), Ok(()));
        assert_eq!(
            check(claims(None, Some(now + skew + 1), None)),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(check(claims(None, None, Some(now + skew))), Ok(()));
        assert_eq!(
            check(claims(None, None, Some(now + skew + 1))),
            Err(TokenError::IssuedInFuture)
        );
        assert_eq!(
            check_times(&claims(None, Some(now), Some(now)), Expiry::Required, now),
            Err(TokenError::NoExpiry)
        );
    }
}
