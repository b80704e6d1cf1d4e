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
