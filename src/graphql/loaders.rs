//! DataLoaders: one batched query for many keys, shared across concurrent
//! requests (registered as schema data).

use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::Loader;

use super::types::User;
use crate::directory::Directory;

/// Users by id, through the `Directory` (process, cache, then one query).
pub struct UserLoader(pub Arc<Directory>);

impl Loader<i64> for UserLoader {
    type Value = User;
    type Error = Arc<anyhow::Error>;

    async fn load(&self, ids: &[i64]) -> Result<HashMap<i64, User>, Self::Error> {
        let profiles = self.0.get_many(ids).await.map_err(Arc::new)?;
        Ok(profiles
            .into_iter()
            .map(|(id, p)| (id, User::from(p)))
            .collect())
    }
}
