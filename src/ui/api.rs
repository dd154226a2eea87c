//! The page's JSON routes. Each is the CLI's own code: values go through the schema in a
//! transaction on the head the page read (so the CLI's conflict rule holds: a key another
//! writer changed since is a conflict, never overwritten; other keys' changes are kept), plans
//! are `cairn plan`'s, history is `cairn log`'s. Database work runs on tokio's blocking pool.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cairn_db::{Db, Error as DbError, ObjectId, CONFIG_BRANCH};
use cairn_schema::{by_name, by_path, value, Key};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AppState;

/// Commits in a page of history, unless asked for fewer.
const PAGE: usize = 50;
const PAGE_MAX: usize = 200;

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn failed(error: impl std::fmt::Display) -> Response {
    reply(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": error.to_string() }))
}

/// Runs `work` on the blocking pool (git and fsync are blocking).
async fn blocking(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(failed)
}

/// `GET /api/settings`: master's head, every key as `list --json` has it plus the control its
/// type wants, and the VM.
pub async fn settings(State(state): State<AppState>) -> Response {
    blocking(move || {
        let db = &state.db;
        let result = (|| -> Result<Value, DbError> {
            let bounded = db.snapshot_bounded(CONFIG_BRANCH)?;
            let mut rows = crate::settings::rows(db, &bounded);
            for (row, key) in rows.iter_mut().zip(cairn_schema::KEYS) {
                row["control"] = control(key, db.host());
            }
            Ok(json!({
                "head": bounded.snapshot.commit.to_string(),
                "keys": rows,
                "vm": super::live::vm(&state.run),
            }))
        })();
        result.map_or_else(failed, |body| reply(StatusCode::OK, body))
    })
    .await
}

/// The control that fits a key's type, with what it allows.
fn control(key: &Key, host: &cairn_schema::Host) -> Value {
    use cairn_schema::value::Kind;
    let allowed = value::allowed(key, host);
    let (kind, extra) = match key.kind {
        _ if key.internal => ("readonly", json!({})),
        Kind::Int { unit: "a size in MiB", .. } => ("size", json!({})),
        Kind::Int { .. } => ("int", json!({})),
        Kind::Choice(["false", "true"]) => ("bool", json!({})),
        Kind::Choice(words) => ("choice", json!({ "choices": words })),
        Kind::ChoiceSet(words) => ("set", json!({ "choices": words })),
        Kind::PortForwards | Kind::IpList | Kind::HostList | Kind::Shares => ("list", json!({})),
        Kind::Sysctl => ("lines", json!({})),
        Kind::DaemonJson => ("json", json!({})),
        Kind::Hostname | Kind::ProxyUrl | Kind::SchemaVersion => ("text", json!({})),
    };
    let mut control =
        json!({ "kind": kind, "allowed": allowed, "type": value::type_name(key.kind) });
    if let (Some(control), Some(extra)) = (control.as_object_mut(), extra.as_object()) {
        control.extend(extra.clone());
    }
    control
}

/// An edit as the page sends it: the head it read, the values as a user types them.
#[derive(Debug, Deserialize)]
pub struct Edit {
    base: String,
    values: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<String>,
}

/// A transaction on `edit.base` with every value set, or the reply that says which values the
/// schema refused (each with its message: key, value, what is allowed).
fn prepare<'a>(db: &'a Db, edit: &Edit) -> Result<cairn_db::Transaction<'a>, Response> {
    let base = resolve(db, &edit.base)?;
    let mut tx = db.transaction(CONFIG_BRANCH).map_err(failed)?;
    tx.base_at(Some(base));
    let mut refused = serde_json::Map::new();
    for (name, text) in &edit.values {
        if let Err(e) = tx.set_key(name, text.as_bytes()) {
            refused.insert(name.clone(), json!(e.to_string()));
        }
    }
    if edit.values.is_empty() {
        return Err(reply(StatusCode::BAD_REQUEST, json!({ "error": "no values to change" })));
    }
    match refused.is_empty() {
        true => Ok(tx),
        false => Err(reply(StatusCode::UNPROCESSABLE_ENTITY, json!({ "refused": refused }))),
    }
}

/// A plan in `cairn plan`'s words, and whole.
fn plan_reply(plan: Result<crate::plan::Plan, DbError>) -> Response {
    match plan {
        Ok(plan) => {
            reply(StatusCode::OK, json!({ "words": crate::plan::words(&plan), "plan": plan }))
        }
        Err(e) => failed(e),
    }
}

/// The schema refused the tree as a whole when the commit was made (no key of the page's).
fn refused_at_commit(e: cairn_schema::Error) -> Response {
    reply(StatusCode::UNPROCESSABLE_ENTITY, json!({ "refused": { "": e.to_string() } }))
}

fn resolve(db: &Db, rev: &str) -> Result<ObjectId, Response> {
    db.resolve(rev).map_err(|e| reply(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })))
}

/// `POST /api/plan`: what saving `values` would do, in `cairn plan`'s words, or what the
/// schema refuses.
pub async fn plan(State(state): State<AppState>, Json(edit): Json<Edit>) -> Response {
    blocking(move || {
        let db = &state.db;
        let tx = match prepare(db, &edit) {
            Ok(tx) => tx,
            Err(refusal) => return refusal,
        };
        plan_reply(crate::plan::of_changes(db, &edit.base, tx.changes()))
    })
    .await
}

/// `POST /api/save`: one commit of every value, with the message if there is one; a key that
/// changed on master since `base` is a conflict (409) with the value it has now.
pub async fn save(State(state): State<AppState>, Json(edit): Json<Edit>) -> Response {
    blocking(move || {
        let db = &state.db;
        let mut tx = match prepare(db, &edit) {
            Ok(tx) => tx,
            Err(refusal) => return refusal,
        };
        if let Some(message) = edit.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
            tx.message(message);
        }
        match tx.commit() {
            Ok(done) => reply(
                StatusCode::OK,
                json!({ "commit": done.id.to_string(), "created": done.created, "rebased": done.rebased }),
            ),
            Err(DbError::Conflict { key, theirs, .. }) => {
                let head = db.head(CONFIG_BRANCH).ok().flatten().map(|h| h.to_string());
                let now = by_name(&key)
                    .ok()
                    .and_then(|k| db.read(CONFIG_BRANCH, k.path).ok().flatten().map(|v| value::to_json(k, &v)));
                reply(
                    StatusCode::CONFLICT,
                    json!({ "conflict": { "key": key, "theirs": theirs, "value": now, "head": head } }),
                )
            }
            Err(DbError::Refused(e)) => refused_at_commit(e),
            Err(e) => failed(e),
        }
    })
    .await
}

/// `GET /api/history?from=REV&key=NAME&limit=N`: commits newest first, each with its keys'
/// old and new values; `next` starts the following page.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    from: Option<String>,
    key: Option<String>,
    limit: Option<usize>,
}

pub async fn history(State(state): State<AppState>, Query(q): Query<HistoryQuery>) -> Response {
    blocking(move || {
        let db = &state.db;
        let limit = q.limit.unwrap_or(PAGE).clamp(1, PAGE_MAX);
        let from = q.from.clone().unwrap_or_else(|| CONFIG_BRANCH.to_owned());
        let result = match &q.key {
            Some(name) => match by_name(name) {
                Ok(key) => key_history(db, key, &from, limit),
                Err(e) => return reply(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
            },
            None => branch_history(db, &from, limit),
        };
        result.map_or_else(failed, |body| reply(StatusCode::OK, body))
    })
    .await
}

fn commit_json(c: &cairn_db::CommitInfo) -> Value {
    json!({
        "id": c.id.to_string(),
        "author": c.author,
        "time": c.time,
        "date": crate::utc(c.time),
        "message": c.message,
        "summary": c.summary(),
        "parents": c.parents.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

/// One key's change, its values as `list` shows them on one line.
fn change_json(path: &str, old: &Option<Vec<u8>>, new: &Option<Vec<u8>>) -> Value {
    let key = by_path(path);
    let shown = |v: &Option<Vec<u8>>| match (key, v) {
        (_, None) => Value::Null,
        (Some(key), Some(bytes)) => json!(value::display(key, bytes)),
        (None, Some(bytes)) => json!(String::from_utf8_lossy(bytes).trim()),
    };
    let apply = key.map(|_| crate::plan::step(path, old.as_deref(), new.as_deref()).class.as_str());
    json!({
        "key": key.map_or(path, |k| k.name),
        "path": path,
        "old": shown(old),
        "new": shown(new),
        "apply": apply,
    })
}

fn branch_history(db: &Db, from: &str, limit: usize) -> Result<Value, DbError> {
    let mut commits = db.log(from, Some(limit + 1))?;
    let next = (commits.len() > limit).then(|| commits.remove(limit).id.to_string());
    let mut out = Vec::new();
    for c in &commits {
        let mut row = commit_json(c);
        row["changes"] = match c.parents.first() {
            Some(parent) => Value::Array(
                db.diff(&parent.to_string(), &c.id.to_string())?
                    .iter()
                    .map(|ch| change_json(&ch.path, &ch.old, &ch.new))
                    .collect(),
            ),
            None => json!([]),
        };
        out.push(row);
    }
    Ok(json!({ "commits": out, "next": next }))
}

fn key_history(db: &Db, key: &Key, from: &str, limit: usize) -> Result<Value, DbError> {
    let mut changes = db.key_history(from, key.path, Some(limit + 1))?;
    let next = (changes.len() > limit).then(|| changes.remove(limit).commit.id.to_string());
    let out: Vec<Value> = changes
        .iter()
        .map(|ch| {
            let mut row = commit_json(&ch.commit);
            row["changes"] = json!([change_json(key.path, &ch.old, &ch.new)]);
            row
        })
        .collect();
    Ok(json!({ "commits": out, "next": next, "key": key.name }))
}

/// `GET /api/commit/ID`: one commit and its whole diff, every value in full (daemon.json as
/// JSON, lists as lists).
pub async fn commit(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    blocking(move || {
        let db = &state.db;
        let id = match resolve(db, &id) {
            Ok(id) => id,
            Err(refusal) => return refusal,
        };
        let result = (|| -> Result<Value, DbError> {
            let info = db.log(&id.to_string(), Some(1))?;
            let Some(info) = info.first() else { return Ok(Value::Null) };
            let mut row = commit_json(info);
            let full = |path: &str, v: &Option<Vec<u8>>| match (by_path(path), v) {
                (_, None) => Value::Null,
                (Some(key), Some(bytes)) => value::to_json(key, bytes),
                (None, Some(bytes)) => json!(String::from_utf8_lossy(bytes)),
            };
            row["changes"] = match info.parents.first() {
                Some(parent) => Value::Array(
                    db.diff(&parent.to_string(), &id.to_string())?
                        .iter()
                        .map(|ch| {
                            let mut change = change_json(&ch.path, &ch.old, &ch.new);
                            change["old_full"] = full(&ch.path, &ch.old);
                            change["new_full"] = full(&ch.path, &ch.new);
                            change
                        })
                        .collect(),
                ),
                None => json!([]),
            };
            Ok(row)
        })();
        result.map_or_else(failed, |body| reply(StatusCode::OK, body))
    })
    .await
}

/// A rollback the page asks for: to the configuration of `commit`, from the head it read.
#[derive(Debug, Deserialize)]
pub struct Rollback {
    commit: String,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// `POST /api/rollback/plan`: what rolling back to `commit` would do, for the confirmation.
pub async fn rollback_plan(State(state): State<AppState>, Json(r): Json<Rollback>) -> Response {
    blocking(move || {
        let db = &state.db;
        if let Err(refusal) = resolve(db, &r.commit) {
            return refusal;
        }
        let head = r.base.clone().unwrap_or_else(|| CONFIG_BRANCH.to_owned());
        plan_reply(crate::plan::between(db, &head, &r.commit))
    })
    .await
}

/// `POST /api/rollback`: a new commit with `commit`'s configuration, refused (409) if master
/// moved since the page showed the plan.
pub async fn rollback(State(state): State<AppState>, Json(r): Json<Rollback>) -> Response {
    blocking(move || {
        let db = &state.db;
        let expect = match r.base.as_deref().map(|b| resolve(db, b)).transpose() {
            Ok(expect) => expect,
            Err(refusal) => return refusal,
        };
        let message = r.message.as_deref().map(str::trim).filter(|m| !m.is_empty());
        match db.rollback(&r.commit, message, expect) {
            Ok(done) => reply(StatusCode::OK, json!({ "commit": done.id.to_string() })),
            Err(DbError::Moved { found, .. }) => reply(
                StatusCode::CONFLICT,
                json!({ "moved": { "head": found }, "error": "master moved since the plan was shown: look again" }),
            ),
            Err(DbError::Refused(e)) => refused_at_commit(e),
            Err(e) => failed(e),
        }
    })
    .await
}
