//! Stand-alone migration CLI (`cargo run -p migration -- up`); `herald migrate`
//! does the same from the main binary.

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
