//! A PostgreSQL database of its own for a test, on the machine's server at 127.0.0.1:5432.
//!
//! Owns creating a database with a unique name and dropping it when the test ends, so tests
//! run in parallel without seeing each other's rows. Promises: the URL it hands out names a
//! database nobody else uses. Must never: touch a database it did not create. A test that must
//! kill the database itself starts its own server instead (see `throwaway postgres`).

/// The machine's PostgreSQL server (trust authentication), overridable for other machines.
pub fn server_url() -> String {
    std::env::var("WK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test, dropped when this is dropped.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        use sqlx::Connection;
        let name = format!("wk_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", server_url()))
            .await
            .expect(
                "the machine's PostgreSQL at 127.0.0.1:5432 (set WK_TEST_POSTGRES to use another)",
            );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        admin.close().await.ok();
        TestDatabase {
            url: format!("{}/{name}", server_url()),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Dropped from any context (a runtime may be gone): a thread of its own with its own
        // small runtime. WITH (FORCE) ends the test's connections still open.
        let url = format!("{}/postgres", server_url());
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}
