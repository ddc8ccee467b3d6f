//! DataLoaders: one batched query for many keys, shared across concurrent
//! requests (registered as schema data).

use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::Loader;
use entity::user;
use sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};

use super::types::User;
use crate::{cache::Cache, keys::Keys};

/// Users' public fields by id: from the cache, then one `WHERE id IN (…)`
/// for the rest. Users never change, so cached copies never go stale.
pub struct UserLoader {
    pub db: DatabaseConnection,
    pub cache: Arc<dyn Cache>,
    pub keys: Keys,
    pub ttl: std::time::Duration,
}

impl Loader<i64> for UserLoader {
    type Value = User;
    type Error = Arc<anyhow::Error>;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, User>, Self::Error> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for &id in ids {
            match self.cache.get(&self.keys.user(id)).await {
                Ok(Some(json)) => match serde_json::from_str::<User>(&json) {
                    Ok(u) => {
                        found.insert(id, u);
                    }
                    Err(_) => missing.push(id),
                },
                _ => missing.push(id),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let rows = user::Entity::find()
            .filter(user::Column::Id.is_in(missing))
            .all(&self.db)
            .await
            .map_err(|e| Arc::new(anyhow::Error::new(e).context("loading users")))?;
        for row in rows {
            let id = row.id;
            let user = User::from(row);
            if let Ok(json) = serde_json::to_string(&user) {
                let _ = self.cache.set(&self.keys.user(id), &json, self.ttl).await;
            }
            found.insert(id, user);
        }
        Ok(found)
    }
}
