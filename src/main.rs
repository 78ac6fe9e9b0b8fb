//! `sentrypeer`: parse the command line, resolve the configuration, start the node, wait for a
//! signal, shut down in order. Exit 2 for a bad setting, 1 for any other failure. SIGHUP
//! (logrotate) reopens the log files and never stops the node.

use std::process::ExitCode;

use clap::Parser;
use sentrypeer::app::{RunningApp, StartError};
use sentrypeer::cli::Cli;
use sentrypeer::config::{Config, ProcessEnv};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let command = cli.command.take();
    let config = match Config::resolve(cli, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    if let Some(command) = command {
        let out = &mut std::io::stdout().lock();
        return match sentrypeer::admin::run(&command, &config.db_file, &config.actors, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, &e),
        };
    }
    init_logging(config.debug);
    raise_open_files_limit();
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(1, &e),
    };
    runtime.block_on(async {
        // Before anything starts: a signal that arrives during startup, or the instant "Ready."
        // is logged, must stop the node in order (or, for SIGHUP, not at all), not kill it with
        // the default action.
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return fail(1, &"cannot install signal handlers");
        };
        let app = match RunningApp::start(config).await {
            Ok(app) => app,
            Err(StartError::Config(e)) => return fail(2, &e),
            Err(StartError::Other(e)) => return fail(1, &format!("{e:#}")),
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                Some(()) = hup.recv() => app.reopen_logs(),
            }
        }
        tracing::info!(
            "Shutting down: stopping intake, then draining outputs. A second signal exits at once."
        );
        let shutdown = app.shutdown();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return ExitCode::SUCCESS,
                // Exit now: returning would wait for the outputs' threads in the runtime's drop.
                _ = term.recv() => std::process::exit(130),
                _ = int.recv() => std::process::exit(130),
                // Not a second stop signal; the last events go to the files already open.
                Some(()) = hup.recv() => {}
            }
        }
    })
}

/// Raises the soft limit on open files (to 65,536, within the hard limit): the connection limits
/// (1,024 SIP streams and 1,024 API connections) need more than the common default of 1,024.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    // Enough for every limit with room to spare, and no more (the hard limit may be huge).
    let wanted = hard.min(65_536);
    let now = if soft < wanted && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        wanted
    } else {
        soft
    };
    if now < 4096 {
        tracing::warn!(
            limit = now,
            "The open-files limit is low for 1,024 SIP and 1,024 API connections; raise it (ulimit -n, LimitNOFILE=)."
        );
    }
}

fn fail(code: u8, e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sentrypeer: error: {e}");
    ExitCode::from(code)
}

fn init_logging(debug: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if debug {
        "sentrypeer=debug,info"
    } else {
        "info"
    };
    let filter =
        EnvFilter::try_from_env("SENTRYPEER_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Events are allocated by capture's threads and freed by whichever output drops them last.
/// glibc gives each thread an arena of its own and keeps what is freed there, which under a
/// flood held about 40 MB more than two shared arenas; one arena costs the threads waits on its
/// lock. Two, unless the operator set `MALLOC_ARENA_MAX` (`bench/ingest.sh` at 50,000 probes/s:
/// peak RSS 141 MB with glibc's default, 95 MB with two arenas, 82 MB with one; the database
/// writer recorded 22% fewer events a second with one than with two).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a glibc tunable; called before the runtime starts threads.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
