//! GraphQL output types, converted from storage models at the edge.

use async_graphql::{ID, SimpleObject};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, SimpleObject)]
pub struct User {
    pub id: ID,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

impl From<entity::user::Model> for User {
    fn from(m: entity::user::Model) -> Self {
        Self {
            id: ID(m.id.to_string()),
            email: m.email,
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Clone, SimpleObject)]
pub struct AuthPayload {
    /// A bearer token for the `Authorization` header or the websocket's
    /// `connection_init` payload.
    pub token: String,
    pub user: User,
}
