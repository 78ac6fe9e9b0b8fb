//! One-shot commands on the database (`sentrypeer webhook status | dead-letters | replay`):
//! they print and exit. They work while a node runs on the same database: WAL lets them read
//! beside it, and each change is one short transaction. Depends on `store` and `cli`, and on
//! the nftables output for `sentrypeer nftables flush`, which removes its table.

use std::io::Write;
use std::path::Path;

use crate::cli::{Command, NftablesCommand, WebhookCommand};
use crate::store::outbox::{self, DeadLetter, Replay};

/// Characters of a response excerpt shown in the dead-letter table (`--json` shows it all).
const EXCERPT_COLUMN_CHARS: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Firewall(String),
    #[error("not dead letters (already replayed?): {}", list(.0))]
    NotDeadLetters(Vec<i64>),
}

/// `sentrypeer export`: the same document `GET /blocklist/...` serves, written to `out` a page at
/// a time; the cursor for the next `--since` goes to standard error.
fn export(
    db_file: &Path,
    actors: &crate::actors::config::ActorConfig,
    [format, kind, scope, set]: [&String; 4],
    since: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let kind = match kind.as_str() {
        "ip" | "ip-addresses" => crate::actors::Kind::Ip,
        "number" | "numbers" => crate::actors::Kind::Number,
        other => {
            return Err(AdminError::Usage(format!(
                "--type must be ip or number, not {other}"
            )));
        }
    };
    let mut q = std::collections::HashMap::from([
        ("format".to_string(), format.clone()),
        ("scope".to_string(), scope.clone()),
        ("set".to_string(), set.clone()),
    ]);
    if let Some(s) = since {
        q.insert("since".into(), s.to_string());
    }
    let req = crate::api::blocklist::request(kind, &q).map_err(AdminError::Usage)?;
    let rules = actors
        .rules()
        .map_err(|e| AdminError::Usage(e.to_string()))?;
    let (store, node_id) =
        crate::store::open_for_reading(db_file).map_err(|e| AdminError::Open {
            path: db_file.display().to_string(),
            source: match e {
                crate::store::StoreError::Sqlite(e) => e,
                other => rusqlite::Error::InvalidParameterName(other.to_string()),
            },
        })?;
    let mut cursor = crate::store::ExportCursor::new(&store, req, rules, node_id)?;
    while let Some(chunk) = cursor.next_chunk(&store)? {
        out.write_all(&chunk)?;
    }
    out.flush()?;
    eprintln!("cursor: {}", cursor.cursor());
    Ok(())
}

fn list(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one command against the database at `db_file`, printing to `out`. Exports follow the
/// bad-actor rule in `actors` (the same settings the node runs with).
pub fn run(
    command: &Command,
    db_file: &Path,
    actors: &crate::actors::config::ActorConfig,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    match command {
        Command::Man => {
            let cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(out)?;
            return Ok(());
        }
        Command::Completions { shell } => {
            let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "sentrypeer", out);
            return Ok(());
        }
        _ => {}
    }
    if let Command::Export {
        format,
        kind,
        scope,
        since,
        set,
    } = command
    {
        return export(
            db_file,
            actors,
            [format, kind, scope, set],
            since.as_deref(),
            out,
        );
    }
    if let Command::Nftables(NftablesCommand::Flush) = command {
        crate::output::kernel_sets::nftables::flush_table().map_err(AdminError::Firewall)?;
        writeln!(
            out,
            "Deleted the nftables table inet {} (if it was there).",
            crate::actors::export::NFT_TABLE
        )?;
        return Ok(());
    }
    let mut conn = outbox::open(db_file).map_err(|source| AdminError::Open {
        path: db_file.display().to_string(),
        source,
    })?;
    match command {
        Command::Export { .. }
        | Command::Man
        | Command::Completions { .. }
        | Command::Nftables(_) => unreachable!("handled above"),
        Command::Webhook(WebhookCommand::Status) => {
            writeln!(out, "outbox: {}", outbox::depth(&conn)?)?;
            writeln!(out, "dead letters: {}", outbox::dead_letter_count(&conn)?)?;
        }
        Command::Webhook(WebhookCommand::DeadLetters { json, limit }) => {
            let rows = outbox::dead_letters(&conn, 0, *limit)?;
            if *json {
                for r in &rows {
                    serde_json::to_writer(&mut *out, r).map_err(std::io::Error::from)?;
                    writeln!(out)?;
                }
            } else {
                print_table(&rows, out)?;
                let total = outbox::dead_letter_count(&conn)?;
                if total > rows.len() as u64 {
                    writeln!(
                        out,
                        "({} more; raise --limit to see them)",
                        total - rows.len() as u64
                    )?;
                }
            }
        }
        Command::Webhook(WebhookCommand::Replay { all, ids }) => {
            let which = if *all { Replay::All } else { Replay::Ids(ids) };
            let done = outbox::replay(&mut conn, which)?;
            writeln!(
                out,
                "Moved {} dead letters back to the outbox; a running node sends them within seconds.",
                done.moved
            )?;
            if !done.missing.is_empty() {
                return Err(AdminError::NotDeadLetters(done.missing));
            }
        }
    }
    Ok(())
}

fn print_table(rows: &[DeadLetter], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<8} {:<23} {:>8} {:>6}  {:<12} {:<36}  RESPONSE",
        "ID", "DEAD_LETTERED_AT", "ATTEMPTS", "STATUS", "REASON", "EVENT_UUID"
    )?;
    for r in rows {
        let status = r
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into());
        // The excerpt is the endpoint's text: one line, printable, short.
        let excerpt: String = r
            .response_excerpt
            .as_deref()
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(EXCERPT_COLUMN_CHARS)
            .collect();
        writeln!(
            out,
            "{:<8} {:<23} {:>8} {:>6}  {:<12} {:<36}  {}",
            r.id,
            r.dead_lettered_at.as_deref().unwrap_or("-"),
            r.attempts,
            status,
            r.reason,
            r.event_uuid,
            excerpt
        )?;
    }
    Ok(())
}
