use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "herald";
/// Clock skew tolerated on `exp`; the contract allows at most 5 s.
pub const LEEWAY_SECS: u64 = 5;
/// The shortest secret accepted: 32 bytes, the HS256 output size.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id, as a decimal string.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// Unique per token, so one token can be revoked alone.
    pub jti: String,
    pub iss: String,
    /// `iat` in milliseconds, so "log out everywhere" can tell a token
    /// issued just before it from one issued just after.
    #[serde(default)]
    pub iat_ms: i64,
}

/// The caller, once its token has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub user_id: i64,
    pub claims: Claims,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    /// Logged out (`logout` or `logoutEverywhere`).
    #[error("token revoked")]
    Revoked,
}

/// Issues and verifies HS256 tokens. The algorithm is pinned on decode, so
/// `alg: none` or an RS256 header with the secret as a "public key" fail.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "jti"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: i64) -> anyhow::Result<String> {
        Ok(self.issue_until(user_id)?.0)
    }

    /// A token for `user_id` and when it expires.
    pub fn issue_until(
        &self,
        user_id: i64,
    ) -> anyhow::Result<(String, chrono::DateTime<chrono::Utc>)> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let now = now_ms.div_euclid(1000);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            iat_ms: now_ms,
            sub: user_id.to_string(),
            iat: now,
            exp: now.saturating_add(ttl),
            jti: uuid::Uuid::new_v4().to_string(),
            iss: ISSUER.to_owned(),
        };
        let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        Ok((self.sign(&claims)?, expires_at))
    }

    /// Signs arbitrary claims; `issue` is the normal way in.
    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &self.encoding,
        )?)
    }

    pub fn verify(&self, token: &str) -> Result<AuthUser, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let user_id = data
            .claims
            .sub
            .parse::<i64>()
            .map_err(|_| TokenError::Invalid)?;
        Ok(AuthUser {
            user_id,
            claims: data.claims,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET, Duration::from_secs(3600))
    }

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "7".into(),
            iat: now,
            exp: now + exp_offset,
            jti: "j".into(),
            iss: ISSUER.into(),
            iat_ms: now * 1000,
        }
    }

    #[test]
    fn an_issued_token_verifies_to_its_user() {
        let keys = keys();
        let token = keys.issue(42).expect("issue");
        let user = keys.verify(&token).expect("valid");
        assert_eq!(user.user_id, 42);
        assert_eq!(user.claims.iss, "herald");
        assert!(user.claims.exp - user.claims.iat == 3600);
    }

    #[test]
    fn each_token_has_its_own_jti() {
        let keys = keys();
        let a = keys.verify(&keys.issue(1).expect("issue")).expect("valid");
        let b = keys.verify(&keys.issue(1).expect("issue")).expect("valid");
        assert_ne!(a.claims.jti, b.claims.jti);
    }

    #[test]
    fn a_token_expired_past_the_leeway_is_rejected_as_expired() {
        let keys = keys();
        let token = keys.sign(&claims(-(LEEWAY_SECS as i64) - 2)).expect("sign");
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_signed_with_another_key_is_rejected() {
        let other = JwtKeys::new(
            b"another secret of thirty-two bytes!",
            Duration::from_secs(60),
        );
        let token = other.issue(1).expect("issue");
        assert_eq!(keys().verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn a_token_from_another_issuer_is_rejected() {
        let keys = keys();
        let mut c = claims(60);
        c.iss = "someone-else".into();
        let token = keys.sign(&c).expect("sign");
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn an_unsigned_alg_none_token_is_rejected() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(serde_json::to_vec(&claims(60)).expect("json"));
        let token = format!("{header}.{body}.");
        assert_eq!(keys().verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn garbage_is_rejected() {
        for token in ["", "abc", "a.b.c", "....."] {
            assert_eq!(keys().verify(token), Err(TokenError::Invalid));
        }
    }
}
