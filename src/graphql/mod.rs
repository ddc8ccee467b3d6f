//! The GraphQL API: schema, resolvers and the per-request context.
//!
//! Resolvers validate input through `domain`, call `storage` and `auth`, and
//! return `ApiResult`, so every error a client sees carries a contract code.

pub mod context;
pub mod inbox;
pub mod limits;
pub mod loaders;
pub mod mutation;
pub mod persisted;
pub mod preferences;
pub mod query;
pub mod recipient;
pub mod schema;
pub mod sender;
pub mod subscription;
pub mod types;

pub use context::{ApiState, ClientIp, RequestAuth};
pub use schema::{HeraldSchema, SchemaOptions, build_schema, sdl};
