//! What counts as a dialled number, once for Rust and once for SQL, and the count of them kept
//! beside the `sentrypeer_numbers` summary.
//!
//! A called value is a dialled number when it is upstream's route pattern for `/numbers/{n}`,
//! `\+?[0-9]+`, with at most [`MAX_NUMBER_DIGITS`] digits; leading zeros are part of it
//! (`0044…` is not `44…`). `NOT_FOUND` and user names (`admin`, `100a`) are not numbers: they
//! are still recorded, and listed with `GET /numbers?all=true`.
//!
//! `GET /numbers` reads a partial index of the summary table that holds dialled numbers only:
//! the rule costs nothing per row read and the total is a count of that index, as cheap as the
//! count of the whole table it replaces (4 ms against 2 ms for 250,000 numbers; the rule
//! evaluated over every row took 110 ms).

use rusqlite::Connection;

pub use crate::actors::{MAX_NUMBER_DIGITS, is_dialled_number};

/// [`is_dialled_number`] in SQL, of the column or expression `$col` (a string literal). The
/// first character is `+` or a digit, the rest are digits, and the digits number 1 to 64
/// ([`MAX_NUMBER_DIGITS`]; a test holds the two to the same answers).
macro_rules! dialled_sql {
    ($col:literal) => {
        concat!(
            "(",
            $col,
            " GLOB '[+0-9]*' AND substr(",
            $col,
            ", 2) NOT GLOB '*[^0-9]*' AND length(ltrim(",
            $col,
            ", '+')) BETWEEN 1 AND 64)"
        )
    };
}
pub(super) use dialled_sql;

/// The index of dialled numbers only, newest first: the `/numbers` pages read it, so they skip
/// no rows. It also holds the listing facts the pages filter on, so the total is a count of its
/// entries alone, with no table row read. Built on the first open of a database that lacks it
/// (half a second for 250,000 numbers), then kept by SQLite. A change to the rule or the columns
/// needs a new name.
///
/// Every other called value (user names, `NOT_FOUND`) is in a second partial index of the same
/// form, which `?all=true` reads beside the first. Each value is in one of the two, so a value
/// seen again moves one index entry: one index covering every value as well cost a flood of
/// distinct numbers a quarter of the writer's throughput.
///
/// Which of the two a row is in is its `dialled` column, set when the row is inserted: SQLite
/// evaluates a partial index's rule for the old and the new row of every update that moves an
/// entry, and the rule itself (two GLOBs, a trim and a length, for each index) was 5% of the
/// writer's time in a flood of distinct numbers.
const INDEX: &str = "
    CREATE INDEX IF NOT EXISTS sentrypeer_numbers_listed_dialled ON sentrypeer_numbers
       (seen_last, local_last_ms, corroborated_ms, excluded) WHERE dialled = 1;
    CREATE INDEX IF NOT EXISTS sentrypeer_numbers_listed_other ON sentrypeer_numbers
       (seen_last, local_last_ms, corroborated_ms, excluded) WHERE dialled = 0;
    DROP INDEX IF EXISTS sentrypeer_numbers_dialled_listed;
    DROP INDEX IF EXISTS sentrypeer_numbers_other_listed;
    DROP INDEX IF EXISTS sentrypeer_numbers_dialled;
    DROP INDEX IF EXISTS sentrypeer_numbers_listed;";

/// Sets `dialled` where it is not set: on every row of a database from before the column, and
/// on rows an older build of this node inserted since (they are in neither list until then).
const CLASSIFY: &str = concat!(
    "UPDATE sentrypeer_numbers SET dialled = ",
    dialled_sql!("called_number"),
    " WHERE dialled IS NULL"
);

/// Adds the `dialled` column if the database lacks it, sets it where it is not set, and
/// creates the two list indexes if the database lacks them (after the set's columns).
pub(super) fn create_index(conn: &Connection) -> rusqlite::Result<()> {
    let has_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('sentrypeer_numbers') WHERE name = 'dialled'")?
        .exists([])?;
    if !has_column {
        conn.execute_batch("ALTER TABLE sentrypeer_numbers ADD COLUMN dialled INTEGER")?;
    }
    // Read first: beside a running node (`sentrypeer export`), an update that finds nothing to
    // set would still hold the write lock for its scan.
    let unset = conn
        .prepare("SELECT 1 FROM sentrypeer_numbers WHERE dialled IS NULL LIMIT 1")?
        .exists([])?;
    if unset {
        conn.execute_batch(CLASSIFY)?;
    }
    conn.execute_batch(INDEX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &[&str] = &[
        "+442012345678",
        "00442012345678",
        "0",
        "+0",
        "100",
        "NOT_FOUND",
        "admin",
        "100a",
        "a100",
        "",
        "+",
        "++44",
        "+44+",
        "4 4",
        " 44",
        "44 ",
        "*97",
        "#1",
        "1%23",
        "%2B44",
        "٤٤", // Arabic-Indic digits are not ASCII digits
        "4٤",
        "1\n",
    ];

    #[test]
    fn numbers_are_plus_and_digits_with_leading_zeros_kept() {
        for yes in ["+442012345678", "00442012345678", "0", "+0", "100"] {
            assert!(is_dialled_number(yes), "{yes}");
        }
        for no in [
            "NOT_FOUND",
            "admin",
            "100a",
            "alice",
            "",
            "+",
            "++44",
            "*97",
            "1%23",
            "%2B44",
            " 44",
        ] {
            assert!(!is_dialled_number(no), "{no}");
        }
        let longest = "9".repeat(MAX_NUMBER_DIGITS);
        assert!(is_dialled_number(&longest));
        assert!(is_dialled_number(&format!("+{longest}")));
        assert!(!is_dialled_number(&format!("{longest}9")));
        assert!(!is_dialled_number(&format!("+{longest}9")));
    }

    fn event(number: &str, at: u32) -> std::sync::Arc<crate::event::Event> {
        let mut e = crate::event::tests::sample();
        e.called_number = number.into();
        e.uuid = uuid::Uuid::new_v4();
        e.timestamp = format!("2026-11-23 10:00:{at:02}.000000000");
        std::sync::Arc::new(e)
    }

    fn counted(conn: &Connection) -> i64 {
        let sql = concat!(
            "SELECT count(*) FROM sentrypeer_numbers WHERE ",
            dialled_sql!("called_number")
        );
        let by_rule: i64 = conn.query_row(sql, [], |r| r.get(0)).unwrap();
        let by_column: i64 = conn
            .query_row(
                "SELECT count(*) FROM sentrypeer_numbers WHERE dialled = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(by_rule, by_column);
        by_column
    }

    fn has_index(conn: &Connection) -> bool {
        conn.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'sentrypeer_numbers_listed_dialled'")
            .unwrap()
            .exists([])
            .unwrap()
    }

    #[test]
    fn the_count_follows_writes_and_deletions_and_an_older_database_gets_the_index_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut writer = super::super::open(&path).unwrap().writer;
        let conn = Connection::open(&path).unwrap();
        assert!(has_index(&conn));
        assert_eq!(counted(&conn), 0);
        let batch: Vec<_> = ["+4420", "0044", "admin", "100a", "NOT_FOUND", "+4420"]
            .iter()
            .enumerate()
            .map(|(i, n)| event(n, i as u32))
            .collect();
        writer.write_batch(&batch).unwrap();
        assert_eq!(counted(&conn), 2);
        // Seen again, in another batch: still two numbers, and one more.
        writer
            .write_batch(&[event("0044", 30), event("alice", 31), event("900", 32)])
            .unwrap();
        assert_eq!(counted(&conn), 3);
        drop(writer);
        // An operator deletes every event to 0044: its summary row goes, and the count with it.
        conn.execute("DELETE FROM honey WHERE called_number = '0044'", [])
            .unwrap();
        assert_eq!(counted(&conn), 2);
        // A database from before the index gets it on open, with what it holds.
        conn.execute_batch(
            "DROP INDEX sentrypeer_numbers_listed_dialled;
             INSERT INTO sentrypeer_numbers (called_number, seen_last, seen_count)
               VALUES ('12345', '2026-11-23 10:01:00.000000000', 1);",
        )
        .unwrap();
        assert!(!has_index(&conn));
        drop(super::super::open(&path).unwrap());
        assert!(has_index(&conn));
        assert_eq!(counted(&conn), 3);
        // A database from before the `dialled` column, with the index of the rule it had.
        conn.execute_batch(concat!(
            "DROP INDEX sentrypeer_numbers_listed_dialled;
             DROP INDEX sentrypeer_numbers_listed_other;
             ALTER TABLE sentrypeer_numbers DROP COLUMN dialled;
             CREATE INDEX sentrypeer_numbers_dialled_listed ON sentrypeer_numbers
               (seen_last, local_last_ms, corroborated_ms, excluded) WHERE ",
            dialled_sql!("called_number"),
            ";
             INSERT INTO sentrypeer_numbers (called_number, seen_last, seen_count)
               VALUES ('+4466', '2026-11-23 10:02:00.000000000', 1),
                      ('bob', '2026-11-23 10:02:00.000000000', 1);"
        ))
        .unwrap();
        drop(super::super::open(&path).unwrap());
        assert!(has_index(&conn));
        assert_eq!(counted(&conn), 4);
        let (old_index, unset): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM sqlite_schema
                           WHERE name = 'sentrypeer_numbers_dialled_listed'),
                        (SELECT count(*) FROM sentrypeer_numbers WHERE dialled IS NULL)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((old_index, unset), (0, 0));
    }

    #[test]
    fn the_sql_rule_gives_the_rust_rules_answers() {
        let conn = Connection::open_in_memory().unwrap();
        let longest = "9".repeat(MAX_NUMBER_DIGITS);
        let long: Vec<String> = vec![
            longest.clone(),
            format!("+{longest}"),
            format!("{longest}9"),
            format!("+{longest}9"),
            format!("0{longest}"),
        ];
        let sql = concat!("SELECT ", dialled_sql!("?1"));
        for s in SAMPLES
            .iter()
            .copied()
            .chain(long.iter().map(String::as_str))
        {
            let got: bool = conn.query_row(sql, [s], |r| r.get(0)).unwrap();
            assert_eq!(got, is_dialled_number(s), "{s:?}");
        }
    }
}
