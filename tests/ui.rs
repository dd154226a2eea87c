//! `cairn ui`, the settings page: over HTTP first (every route needs the token, answers only
//! as its own address and takes changes only from its own origin; the schema refuses a value
//! with no commit; several keys make one commit; a conflict never overwrites; a rollback
//! commits the old tree; history pages; the live events follow the CLI), then in Debian's
//! chromium through playwright-core (tests/ui/browser.mjs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{Env, Killed};

/// A running `cairn ui` and how to reach it.
pub struct Ui {
    _server: Killed,
    port: u16,
    token: String,
}

/// A reply: status, headers (lower-case names), body.
pub struct Reply {
    pub status: u16,
    headers: String,
    body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// The page's live events, read as they come.
pub struct Events(std::io::Lines<BufReader<TcpStream>>);

impl Events {
    /// The data of the next event of `kind` (`head` or `vm`).
    pub fn next(&mut self, kind: &str) -> String {
        let wanted = format!("event: {kind}");
        loop {
            let line = self.0.next().expect("the stream goes on").expect("reads");
            if line == wanted {
                let data = self.0.next().expect("data").expect("reads");
                return data.strip_prefix("data: ").expect("a data line").to_owned();
            }
        }
    }
}

impl Ui {
    pub fn start(env: &Env) -> Ui {
        let mut server = Killed(
            env.command(&["ui", "--listen", "127.0.0.1:0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("cairn ui starts"),
        );
        let stdout = server.0.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("cairn ui prints its URL");
        let url = line.trim();
        let rest = url.strip_prefix("http://127.0.0.1:").expect("a loopback URL");
        let (port, token) = rest.split_once("/?token=").expect("a token in the URL");
        Ui { _server: server, port: port.parse().expect("a port"), token: token.to_owned() }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One request with exactly these headers (and Host, unless given).
    fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> Reply {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            request.push_str(&format!("Host: {}\r\n", self.host()));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if method == "POST" {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).expect("writes");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("reads");
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
        Reply { status, headers: head.to_ascii_lowercase(), body: body.to_owned() }
    }

    fn cookie(&self) -> (&'static str, String) {
        ("Cookie", format!("cairn_ui_{}={}", self.port, self.token))
    }

    fn origin(&self) -> (&'static str, String) {
        ("Origin", format!("http://{}", self.host()))
    }

    /// `GET /api/events`, open.
    pub fn events(&self) -> Events {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connects");
        let (cookie, host) = (self.cookie().1, self.host());
        write!(stream, "GET /api/events HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n")
            .expect("writes");
        stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        Events(BufReader::new(stream).lines())
    }

    pub fn get(&self, path: &str) -> Reply {
        self.raw("GET", path, &[self.cookie()], None)
    }

    fn post(&self, path: &str, body: Value) -> Reply {
        self.raw("POST", path, &[self.cookie(), self.origin()], Some(&body))
    }
}

const GETS: &[&str] = &[
    "/",
    "/app.js",
    "/app.css",
    "/api/settings",
    "/api/history",
    "/api/commit/master",
    "/api/events",
];
const POSTS: &[&str] = &["/api/plan", "/api/save", "/api/rollback/plan", "/api/rollback"];

#[test]
fn every_route_needs_the_token_its_own_host_and_its_own_origin() {
    let env = Env::new();
    let ui = Ui::start(&env);
    let head = env.head();
    let change = json!({ "base": head, "values": { "memory": "4096" }, "commit": head });
    for path in GETS {
        assert_eq!(ui.raw("GET", path, &[], None).status, 401, "GET {path} without the token");
        let wrong = ui.raw("GET", &format!("{path}?token=0123"), &[], None);
        assert_eq!(wrong.status, 401, "GET {path} with a wrong token");
        let rebound = ui.raw("GET", path, &[ui.cookie(), ("Host", "evil.example".into())], None);
        assert_eq!(rebound.status, 403, "GET {path} as another host (DNS rebinding)");
    }
    for path in POSTS {
        let anonymous = ui.raw("POST", path, &[ui.origin()], Some(&change));
        assert_eq!(anonymous.status, 401, "POST {path} without the token");
        let foreign = ui.raw(
            "POST",
            path,
            &[ui.cookie(), ("Origin", "http://evil.example".into())],
            Some(&change),
        );
        assert_eq!(foreign.status, 403, "POST {path} from another origin (CSRF)");
        let bare = ui.raw("POST", path, &[ui.cookie()], Some(&change));
        assert_eq!(bare.status, 403, "POST {path} without an Origin");
        assert!(!foreign.headers.contains("access-control-allow-origin"), "CORS on {path}");
    }
    assert_eq!(env.head(), head, "nothing was committed");
    // The token, once, becomes a cookie no script and no other site's request carries.
    let entry = ui.raw("GET", &format!("/?token={}", ui.token), &[], None);
    assert_eq!(entry.status, 303);
    assert!(
        entry.headers.contains("location: /\r\n") || entry.headers.ends_with("location: /"),
        "{}",
        entry.headers
    );
    let cookie =
        format!("set-cookie: cairn_ui_{}={}; httponly; samesite=strict; path=/", ui.port, ui.token);
    assert!(entry.headers.contains(&cookie), "{}", entry.headers);
    let page = ui.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<script src=\"/app.js\""), "{}", page.body);
    for header in [
        "content-security-policy: default-src 'self'",
        "x-frame-options: deny",
        "referrer-policy: no-referrer",
        "cache-control: no-store",
    ] {
        assert!(page.headers.contains(header), "no {header}: {}", page.headers);
    }
    // Only loopback.
    let err = env.fails(&["ui", "--listen", "0.0.0.0:0"], 1);
    assert!(err.contains("only a loopback address"), "{err}");
}

#[test]
fn the_schema_refuses_with_no_commit_and_several_keys_make_one_commit() {
    let env = Env::new();
    let ui = Ui::start(&env);
    let head = env.head();
    let refused = ui.post(
        "/api/save",
        json!({ "base": head, "values": { "memory": "lots", "hostname": "fine" } }),
    );
    assert_eq!(refused.status, 422, "{}", refused.body);
    let message = refused.json()["refused"]["memory"].as_str().expect("a message").to_owned();
    assert!(
        message.starts_with("memory: \"lots\" is not a size in MiB (allowed: 768 to "),
        "{message}"
    );
    assert_eq!(env.head(), head, "a refused value made a commit");

    let values = json!({ "memory": "4G", "hostname": "web" });
    let plan = ui.post("/api/plan", json!({ "base": head, "values": values }));
    assert_eq!(plan.status, 200, "{}", plan.body);
    let cli_plan = env.ok(&["plan", "memory=4G", "hostname=web"]);
    assert_eq!(plan.json()["words"], cli_plan.trim(), "the page's plan is `cairn plan`'s");
    let saved =
        ui.post("/api/save", json!({ "base": head, "values": values, "message": "from the page" }));
    assert_eq!(saved.status, 200, "{}", saved.body);
    let commit = saved.json()["commit"].as_str().expect("a commit").to_owned();
    assert_eq!(env.head(), commit);
    assert_eq!(env.git(&["log", "-1", "--format=%s", "master"]).trim(), "from the page");
    assert_eq!(env.git(&["rev-parse", "master~1"]).trim(), head, "one commit for both keys");
    let changed = env.git(&["diff", "--name-only", &head, &commit]);
    assert_eq!(changed.lines().collect::<Vec<_>>(), ["etc/hostname", "memory"]);
    assert_eq!(env.ok(&["get", "memory"]).trim(), "4096");
    env.fsck();
}

#[test]
fn a_conflict_never_overwrites_and_a_rollback_commits_the_old_tree() {
    let env = Env::new();
    let ui = Ui::start(&env);
    let first = env.head();
    env.ok(&["set", "sysctl", "vm.swappiness = 10"]);
    let base = env.head();
    // Another writer changes memory after the page read `base`.
    env.ok(&["set", "memory", "3G"]);
    let conflict = ui.post("/api/save", json!({ "base": base, "values": { "memory": "5G" } }));
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    let c = conflict.json();
    assert_eq!(c["conflict"]["key"], "memory");
    assert_eq!(c["conflict"]["value"], 3072, "{c}");
    assert_eq!(env.ok(&["get", "memory"]).trim(), "3072", "overwritten");
    // A key nobody else touched is saved on top of the other writer's commit.
    let other = ui.post("/api/save", json!({ "base": base, "values": { "hostname": "kept" } }));
    assert_eq!(other.status, 200, "{}", other.body);
    assert_eq!(other.json()["rebased"], true);
    assert_eq!(env.ok(&["get", "memory"]).trim(), "3072");

    // Rollback to the first commit: its plan first, then a new commit with its tree.
    let head = env.head();
    let plan = ui.post("/api/rollback/plan", json!({ "commit": first, "base": head }));
    assert_eq!(plan.status, 200, "{}", plan.body);
    let words = plan.json()["words"].as_str().expect("words").to_owned();
    assert!(
        words.starts_with("reboot: ")
            && words.contains("memory (reboot)")
            && words.contains("sysctl (guest-live)"),
        "{words}"
    );
    let stale = ui.post("/api/rollback", json!({ "commit": first, "base": base }));
    assert_eq!(stale.status, 409, "a rollback confirmed on an old head: {}", stale.body);
    let done = ui.post("/api/rollback", json!({ "commit": first, "base": head }));
    assert_eq!(done.status, 200, "{}", done.body);
    let new = done.json()["commit"].as_str().expect("a commit").to_owned();
    assert_eq!(env.git(&["rev-parse", "master~1"]).trim(), head, "history kept");
    let tree = |rev: &str| env.git(&["rev-parse", &format!("{rev}^{{tree}}")]).trim().to_owned();
    assert_eq!(tree(&new), tree(&first));
    env.fsck();
}

#[test]
fn history_pages_and_a_key_has_its_own() {
    let env = Env::new();
    let ui = Ui::start(&env);
    for n in 0..60 {
        env.ok(&["set", "mtu", &(1400 + n).to_string()]);
    }
    env.ok(&["set", "hostname", "last"]);
    let page = ui.get("/api/history?limit=50").json();
    let commits = page["commits"].as_array().expect("commits");
    assert_eq!(commits.len(), 50);
    assert_eq!(commits[0]["message"], "set hostname=last");
    assert_eq!(
        commits[0]["changes"][0],
        json!({ "key": "hostname", "path": "etc/hostname", "old": "cairn", "new": "last", "apply": "guest-live" })
    );
    let next = page["next"].as_str().expect("a next page").to_owned();
    let rest = ui.get(&format!("/api/history?limit=50&from={next}")).json();
    let rest = rest["commits"].as_array().expect("commits");
    assert_eq!(rest.len(), 62 - 50, "61 sets and the first commit");
    assert!(rest.last().expect("the first commit")["message"]
        .as_str()
        .expect("text")
        .starts_with("init:"));
    let mtu = ui.get("/api/history?key=mtu&limit=5").json();
    assert_eq!(mtu["commits"].as_array().map(Vec::len), Some(5));
    assert_eq!(mtu["commits"][0]["changes"][0]["new"], "1459");
    let diff = ui.get(&format!("/api/commit/{}", commits[1]["id"].as_str().expect("an id"))).json();
    assert_eq!(diff["changes"][0]["old_full"], 1458);
    assert_eq!(diff["changes"][0]["new_full"], 1459);
    assert_eq!(ui.get("/api/history?key=nope").status, 400);
}

#[test]
fn live_events_follow_commits_made_elsewhere() {
    let env = Env::new();
    let ui = Ui::start(&env);
    let mut events = ui.events();
    let mut next_head = || events.next("head");
    assert_eq!(next_head(), env.head(), "the head now, first");
    for (how, set) in [("cairn", true), ("git", false)] {
        let started = Instant::now();
        let head = if set {
            env.ok(&["set", "hostname", "live"]);
            env.head()
        } else {
            env.git_set("etc/hostname", "plain-git")
        };
        assert_eq!(next_head(), head, "a commit by {how}");
        eprintln!("a commit by {how} reached the page's events in {:?}", started.elapsed());
    }
}

#[test]
fn in_a_real_browser() {
    let env = Env::new();
    let ui = Ui::start(&env);
    let dir = crate::util::repo().join("tests/ui");
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and playwright-core: bash tests/run.sh installs both"
    );
    let artifacts = crate::util::repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("mkdir");
    let url = format!("http://127.0.0.1:{}/?token={}", ui.port, ui.token);
    let out = Command::new("node")
        .arg(dir.join("browser.mjs"))
        .arg(&url)
        .current_dir(&dir)
        .env("CAIRN_BIN", crate::util::cairn_bin())
        .env("CAIRN_HOME", env.home())
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Author")
        .env("GIT_COMMITTER_EMAIL", "author@example.com")
        .env("ARTIFACTS", &artifacts)
        .output()
        .expect("node runs");
    let steps = String::from_utf8_lossy(&out.stdout);
    eprintln!("{steps}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{steps}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let step = |name: &str| -> Value {
        steps
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["step"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {steps}"))
    };
    let refused = step("refused")["message"].as_str().expect("a message").to_owned();
    assert!(
        refused.starts_with("memory: \"100\" is less than") && refused.contains("(allowed: 768 to"),
        "{refused}"
    );
    assert_eq!(step("saved")["plan"], "reboot: hostname (guest-live), memory (reboot)");
    // The page's save is a commit `git log` shows, with its message.
    let log = env.git(&["log", "--format=%s", "master"]);
    assert!(log.lines().any(|l| l == "bigger, from the browser"), "{log}");
    assert!(log.lines().next().expect("a commit").starts_with("rollback to "), "{log}");
    assert_eq!(env.ok(&["get", "memory"]).trim(), "2048", "rolled back to the first commit");
    for shot in ["ui-settings.png", "ui-history.png"] {
        let size = std::fs::metadata(artifacts.join(shot)).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{shot}: {size} bytes");
    }
}
