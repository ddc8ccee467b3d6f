//! The `herald` binary: parse the command line, load the configuration,
//! start logging, run the chosen subcommand.

use std::process::ExitCode;

use anyhow::Context as _;
use herald::{
    admin, app,
    config::{Cli, Command, Config, GlobalArgs, MigrateAction},
    graphql, storage, telemetry,
};
use migration::MigratorTrait as _;
use tokio_util::sync::CancellationToken;

/// glibc's allocator spent a third of a cached read's CPU in malloc/free and
/// its arena locks (tokio frees on another thread than it allocated);
/// mimalloc's thread-local heaps avoid both (see the README's Benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // mimalloc asks for transparent huge pages on its arena; where the
    // kernel grants them on request (THP "madvise", Debian's default), the
    // idle server held 16 MiB of them: 37 MiB RSS against 23 MiB without.
    // Pages mapped from here on are small pages.
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse_with_default();
    // Made and dropped outside the runtime: the trace exporter's HTTP
    // client blocks, and dropping it flushes the last spans.
    let _telemetry = telemetry::init(cli.global.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("herald: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line first; the cause chain after it.
            eprintln!("herald: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Schema) => {
            print!("{}", graphql::sdl());
            Ok(())
        }
        Some(Command::Migrate(args)) => {
            let db = storage::connect(&cli.global.database_url()).await?;
            match args.action.unwrap_or(MigrateAction::Up) {
                MigrateAction::Up => {
                    storage::migrate(&db).await?;
                    println!("migrations applied");
                }
                MigrateAction::Status => {
                    let applied = migration::Migrator::get_applied_migrations(&db).await?;
                    let pending = migration::Migrator::get_pending_migrations(&db).await?;
                    for m in &applied {
                        println!("applied  {}", m.name());
                    }
                    for m in &pending {
                        println!("pending  {}", m.name());
                    }
                }
            }
            Ok(())
        }
        Some(Command::ApiKey(action)) => {
            operator(&cli.global, admin::Command::ApiKey(action)).await
        }
        Some(Command::Webhook(action)) => {
            operator(&cli.global, admin::Command::Webhook(action)).await
        }
        Some(Command::Serve(args)) => run_app(Config::for_serve(&cli.global, *args)?).await,
        Some(Command::Worker(args)) => run_app(Config::for_worker(&cli.global, *args)?).await,
        None => unreachable!("Cli::parse_with_default always picks a subcommand"),
    }
}

/// An operator command, on the database `serve` uses, migrated as `serve`
/// migrates it.
async fn operator(global: &GlobalArgs, command: admin::Command) -> anyhow::Result<()> {
    let db = storage::connect(&global.database_url()).await?;
    storage::migrate(&db).await?;
    let out = admin::run(&db, command).await;
    db.close().await.context("closing the database")?;
    print!("{}", out?);
    Ok(())
}

async fn run_app(config: Config) -> anyhow::Result<()> {
    let application = app::build(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    application.run_until_stopped(shutdown).await
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
