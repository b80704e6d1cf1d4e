//! PostgreSQL for the tests: the library's throwaway server
//! (`sagad::journal::postgres::throwaway`), one for the whole test crate and
//! a fresh database for each test, stopped and removed when the crate's
//! process exits. Without the server binaries every test that asks for one
//! fails, saying to install Debian's `postgresql` package.

use tokio_postgres::{Client, NoTls};

/// The URL of a fresh, empty database.
pub async fn database() -> String {
    sagad::journal::postgres::throwaway::shared_database()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A plain connection to `url`, for looking at the journal's tables (or
/// changing them behind a coordinator's back).
pub async fn sql(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Every saga's events are numbered 1, 2, 3, … and every offset is used
/// once; returns how many sagas have events.
pub async fn journal_is_whole(db: &Client) -> usize {
    let offsets: Vec<i64> = db
        .query(
            "SELECT \"offset\" FROM sagad.event ORDER BY \"offset\"",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(offsets, (1..=offsets.len() as i64).collect::<Vec<_>>());
    let histories = db
        .query(
            "SELECT saga_id::text, array_agg(seq ORDER BY seq) FROM sagad.event GROUP BY saga_id",
            &[],
        )
        .await
        .unwrap();
    for row in &histories {
        let seqs: Vec<i64> = row.get(1);
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "saga {}",
            row.get::<_, String>(0)
        );
    }
    histories.len()
}
