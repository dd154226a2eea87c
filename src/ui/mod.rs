//! `cairn ui`: the settings as a local web page, through the database. The page is as honest
//! as the CLI because it is the CLI's code behind HTTP: the same schema checks every value, the
//! same plan says what a change does, one transaction makes one commit with the CLI's conflict
//! rule, and the history is the same git history. It works with or without `cairn up`; the
//! VM's part says "stopped" then.
//!
//! No one in: it listens on loopback only, every request needs the token printed with its URL
//! (exchanged at once for an HttpOnly, SameSite=Strict cookie), the Host header must be the
//! address it serves (DNS rebinding), every change must carry a matching Origin (a page of
//! another origin cannot post here), and nothing answers CORS.
//!
//! # Layout
//! - `guard`: the token, the cookie, Host and Origin, the security headers.
//! - `api`: the JSON routes: settings, plan, save, history, a commit's diff, rollback.
//! - `live`: server-sent events fed by the repository's head watch and the VM's status.
//! - `page`: the page itself (HTML, CSS and JavaScript embedded in the binary).

mod api;
mod guard;
mod live;
mod page;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::{get, post};
use cairn_db::Db;

use crate::up::status::RunDir;
use crate::Error;

/// What `cairn ui` serves, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// A loopback address; port 0 takes any free port.
    pub listen: SocketAddr,
    /// The data directory (`$CAIRN_HOME`): the VM's status is under its `run`.
    pub home: PathBuf,
    /// The database.
    pub db: PathBuf,
}

/// What every handler shares.
#[derive(Debug)]
struct Shared {
    db: Arc<Db>,
    run: RunDir,
    guard: guard::Guard,
    live: tokio::sync::broadcast::Sender<live::Live>,
}

type AppState = Arc<Shared>;

/// Serves the page until Ctrl-C; `started` hears its URL (with the token) once it listens.
pub fn run(options: Options, started: &mut dyn FnMut(&str)) -> Result<(), Error> {
    if !options.listen.ip().is_loopback() {
        return Err(Error::NotLoopback(options.listen.to_string()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("cairn-ui")
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(serve(options, started))
}

async fn serve(options: Options, started: &mut dyn FnMut(&str)) -> Result<(), Error> {
    let listen_err = |source| Error::Listen { address: options.listen.to_string(), source };
    let listener = tokio::net::TcpListener::bind(options.listen).await.map_err(listen_err)?;
    let address = listener.local_addr().map_err(listen_err)?;
    let host = crate::host::detect(&options.home)?;
    let db = Arc::new(Db::open(&options.db, host)?);
    let run = crate::up::run_dir(&options.home);
    let guard = guard::Guard::new(address)?;
    let url = format!("http://{address}/?token={}", guard.token());
    let (live, _) = tokio::sync::broadcast::channel(64);
    live::watch(&db, &run, live.clone())?;
    let state = Arc::new(Shared { db, run, guard, live });
    let routes = axum::Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/app.css", get(page::style))
        .route("/api/settings", get(api::settings))
        .route("/api/plan", post(api::plan))
        .route("/api/save", post(api::save))
        .route("/api/history", get(api::history))
        .route("/api/commit/{id}", get(api::commit))
        .route("/api/rollback/plan", post(api::rollback_plan))
        .route("/api/rollback", post(api::rollback))
        .route("/api/events", get(live::events))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::check))
        .with_state(state);
    let app = guard::with_headers(routes);
    started(&url);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::io(std::path::Path::new("the web page's server"), e))
}
