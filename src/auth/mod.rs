//! Credentials: argon2id password hashing (off the async runtime, bounded) and
//! HS256 JWTs. Knows nothing of GraphQL or storage.

pub mod api_key;
pub mod jwt;
pub mod password;
pub mod revocation;

pub use api_key::{ApiKeys, AppCaller};
pub use jwt::{AuthUser, Claims, JwtKeys, TokenError};
pub use password::PasswordHasher;
pub use revocation::{InProcessRevocations, RedisRevocations, Revocations};
