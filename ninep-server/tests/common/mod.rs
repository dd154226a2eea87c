//! A real database served over a real unix socket, for the integration tests.
// Each test binary uses a part of the helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use cairn_9p::client::Client;
use cairn_db::{Db, CONFIG_BRANCH};
use cairn_schema::Host;
use tokio::net::UnixStream;

const HOST: Host = Host { ram_mib: 8192, cores: 4, disk_mib: 0 };

/// A served database in a temporary directory; the socket is `dir/9p.sock`.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub db: Arc<Db>,
    pub fs: Arc<cairn_9p::Fs>,
}

impl Server {
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(Db::init(&dir.path().join("db"), HOST).expect("init"));
        let fs = Arc::new(cairn_9p::Fs::new(db.clone()));
        let socket = dir.path().join("9p.sock");
        let path = socket.clone();
        let served = fs.clone();
        tokio::spawn(async move { cairn_9p::transport::serve_unix(served, &path).await });
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Server { dir, db, fs }
    }

    pub async fn client(&self, msize: u32) -> Client<UnixStream> {
        let stream = UnixStream::connect(self.dir.path().join("9p.sock")).await.expect("connect");
        Client::connect(stream, msize).await.expect("version and attach")
    }

    pub fn head(&self) -> String {
        self.db.head(CONFIG_BRANCH).expect("head").expect("exists").to_string()
    }
}
