//! The Docker engine end to end under QEMU TCG: the docker flavour of the guest image (Debian's
//! docker.io, containerd and runc), dockerd started by the guest agent, and the host's Docker
//! CLI (from the same package) talking to it through `cairn up`'s docker.sock. daemon.json
//! changes reload dockerd (same pid) or restart it (new pid, same boot); a file dockerd refuses
//! leaves the engine running on the previous one with the error in `cairn status`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::up::{boot_id, status, up_detached, wait_for, Down};
use crate::util::Env;

/// The host's Docker CLI against the VM's engine.
pub struct Docker {
    pub cli: PathBuf,
    pub host: String,
}

impl Docker {
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.cli)
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", std::env::temp_dir().join("cairn-test-docker-config"))
            .output()
            .expect("the docker CLI runs")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        crate::util::succeeded(self.run(args), &format!("docker {args:?}"))
    }

    /// One field of `docker info`, by Go template.
    pub fn info(&self, template: &str) -> String {
        self.ok(&["info", "--format", template]).trim().to_owned()
    }
}

/// `cairn set daemon JSON --wait` for a file the guest cannot apply: its standard error.
fn refused(env: &Env, json: &str) -> String {
    let out = env.run(&["set", "daemon", json, "--wait", "--timeout", "240"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn dockerd_pid(s: &Value) -> u64 {
    s["guest"]["dockerd_pid"].as_u64().unwrap_or_default()
}

/// Builds the docker flavour's image; the Docker CLI that came with its engine.
pub fn build_image(env: &Env) -> PathBuf {
    let built = env
        .command(&["guest", "build", "--flavour", "docker"])
        .env("CAIRN_CACHE", crate::up::cache())
        .output()
        .expect("runs");
    let built = crate::util::succeeded(built, "cairn guest build");
    let cli = built.lines().find_map(|l| l.strip_prefix("docker ")).expect("the image's CLI");
    PathBuf::from(cli)
}

/// Bytes that do not compress (xorshift), so that what holds them takes their size.
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in data.chunks_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
    }
    data
}

/// The engine of a fresh `cairn up` of the docker flavour, through the image's own CLI.
pub fn engine(env: &Env) -> Docker {
    let cli = build_image(env);
    up_detached(env, "docker");
    let docker =
        Docker { cli, host: format!("unix://{}", env.home().join("run/docker.sock").display()) };
    wait_for(env, "the engine", |s| s["guest"]["dockerd"] == "running");
    docker
}

/// A tar of a root filesystem with busybox-static as `sh`, `echo` and `cat`, for `docker
/// import`, and `extra` bytes of random data in /payload (an image of a size that counts).
pub fn busybox_tar(dir: &Path, extra: usize) -> PathBuf {
    busybox_tar_with(dir, &["sh", "echo", "cat"], extra)
}

/// [`busybox_tar`] with busybox as each of `applets`.
pub fn busybox_tar_with(dir: &Path, applets: &[&str], extra: usize) -> PathBuf {
    busybox_tar_and(dir, applets, extra, &[])
}

/// [`busybox_tar_with`] and the fixtures `programs` (tests/fixtures/NAME.rs), built static,
/// in /bin.
pub fn busybox_tar_and(dir: &Path, applets: &[&str], extra: usize, programs: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    for program in programs {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let built = Command::new(rustc)
            .args([
                "-O",
                "-C",
                "target-feature=+crt-static",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .arg(crate::util::fixture(&format!("{program}.rs")))
            .arg("-o")
            .arg(root.join("bin").join(program))
            .output()
            .expect("rustc runs");
        crate::util::succeeded(built, &format!("rustc {program}.rs"));
    }
    std::fs::create_dir_all(root.join("bin")).expect("mkdir");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    if extra > 0 {
        // Incompressible, so that the layer takes its size on the disk.
        std::fs::write(root.join("payload"), incompressible(extra)).expect("payload");
    }
    let tar = dir.join("busybox.tar");
    let packed = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar runs");
    assert!(packed.success());
    tar
}

#[test]
fn dockerd_follows_daemon_json_by_reload_and_restart_and_survives_a_bad_file() {
    let _vm = crate::util::one_vm_at_a_time();
    let env = Env::new();
    let _down = Down(&env);
    // The image first, for its Docker CLI: the one on PATH when `up` makes its context.
    let cli = build_image(&env);
    std::fs::create_dir_all(env.bin()).expect("mkdir");
    std::os::unix::fs::symlink(cli, env.bin().join("docker")).expect("symlink");
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(env.home().join("guest-docker/manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(manifest["suite"], "trixie", "{manifest:#}");
    let engine = manifest["packages"]["docker.io"].as_str().expect("docker.io's version");

    let up = env
        .command(&["up", "--detach", "--flavour", "docker"])
        .env("CAIRN_CACHE", crate::up::cache())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&up.stderr).into_owned();
    let stdout = crate::util::succeeded(up, "cairn up");
    let socket = env.home().join("run/docker.sock");
    let host = format!("unix://{}", socket.display());
    assert!(stdout.contains(&format!("DOCKER_HOST={host}")), "{stdout}");
    assert!(stderr.contains("docker context cairn created"), "{stderr}");
    assert!(!stderr.contains("rebuilding"), "up used the image built above: {stderr}");
    // The Docker CLI's own convention: its context reaches the engine from the manifest.
    let context = |args: &[&str]| {
        Command::new(env.bin().join("docker"))
            .args(["--context", "cairn"])
            .args(args)
            .env("DOCKER_CONFIG", env.docker_config())
            .env_remove("DOCKER_HOST")
            .output()
            .expect("docker runs")
    };
    let version = crate::util::succeeded(
        context(&["version", "--format", "{{.Server.Version}}"]),
        "docker --context cairn version",
    );
    let upstream = engine.split('-').next().unwrap_or(engine);
    assert_eq!(version.trim(), upstream, "the server is the manifest's docker.io");
    assert!(upstream.starts_with("26."), "{upstream}");
    crate::util::succeeded(context(&["info"]), "docker --context cairn info");
    let exported = env.ok(&["docker-env"]);
    assert!(exported.contains(&format!("export DOCKER_HOST={host}")), "{exported}");

    let first = wait_for(&env, "dockerd running", |s| dockerd_pid(s) != 0);
    let (boot, pid) = (boot_id(&first), dockerd_pid(&first));
    assert_eq!(first["docker"]["forward"], "listening", "{first:#}");
    let cli = first["docker"]["cli"].as_str().expect("the CLI of the engine's package");
    let docker = Docker { cli: cli.into(), host: host.clone() };
    assert_eq!(docker.info("{{.Debug}}"), "false");
    assert_eq!(docker.info("{{.Driver}}"), "overlay2", "on the data disk");

    // Reloadable keys: SIGHUP, same dockerd.
    let reload = r#"{"debug": true, "labels": ["team=infra"], "insecure-registries": ["registry.test:5000"]}"#;
    assert_eq!(env.ok(&["plan", "daemon", reload]).trim(), "daemon-reload: daemon (daemon-reload)");
    env.ok(&["set", "daemon", reload, "--wait", "--timeout", "240"]);
    assert_eq!(docker.info("{{.Debug}}"), "true");
    assert_eq!(docker.info("{{json .Labels}}"), r#"["team=infra"]"#);
    let registries = docker.info("{{json .RegistryConfig.IndexConfigs}}");
    assert!(registries.contains(r#""registry.test:5000""#), "{registries}");
    let s = status(&env);
    assert_eq!(dockerd_pid(&s), pid, "a reload keeps dockerd: {s:#}");

    // A restart-class key (the proxy reaches dockerd's environment): new dockerd, same boot.
    assert_eq!(
        env.ok(&["plan", "proxy.http", "http://proxy.test:3128"]).trim(),
        "daemon-restart: proxy.http (daemon-restart)"
    );
    env.ok(&["set", "proxy.http", "http://proxy.test:3128", "--wait", "--timeout", "240"]);
    assert_eq!(docker.info("{{.HTTPProxy}}"), "http://proxy.test:3128");
    assert_eq!(docker.info("{{.Debug}}"), "true", "the restarted dockerd keeps the file");
    let s = status(&env);
    let restarted = dockerd_pid(&s);
    assert!(restarted != 0 && restarted != pid, "a restart starts a new dockerd: {s:#}");
    assert_eq!(boot_id(&s), boot, "without rebooting the VM");

    // An image built here runs in the VM.
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = busybox_tar(dir.path(), 0);
    docker.ok(&["import", &tar.display().to_string(), "cairn-test/busybox:1"]);
    assert_eq!(docker.ok(&["run", "--rm", "cairn-test/busybox:1", "echo", "hi"]).trim(), "hi");

    // A file dockerd refuses on reload: the engine keeps the previous file.
    let good = env.head();
    let stderr = refused(
        &env,
        r#"{"debug": true, "labels": ["team=infra"], "insecure-registries": ["registry.test:5000"], "default-runtime": "no-such-runtime"}"#,
    );
    assert!(stderr.contains("daemon: dockerd refused to reload it"), "{stderr}");
    assert!(stderr.contains("no-such-runtime"), "dockerd's own message: {stderr}");
    let s = status(&env);
    assert_eq!(s["last_error"]["key"], "daemon", "{s:#}");
    assert_eq!(dockerd_pid(&s), restarted);
    assert_eq!(docker.info("{{json .Labels}}"), r#"["team=infra"]"#, "the previous file runs");

    // A file dockerd refuses to start with: it comes back on the previous file.
    let stderr = refused(&env, r#"{"storage-driver": "no-such-driver"}"#);
    assert!(stderr.contains("daemon: dockerd did not start with it"), "{stderr}");
    assert!(stderr.contains("storage-driver"), "the key at fault: {stderr}");
    let s = status(&env);
    assert_eq!(s["last_error"]["key"], "daemon", "{s:#}");
    assert_eq!(s["applied_commit"], good.as_str());
    let dockerd = s["guest"]["dockerd"].as_str().unwrap_or_default();
    assert!(dockerd.starts_with("running on the previous daemon.json"), "{s:#}");
    assert_eq!(docker.info("{{.Driver}}"), "overlay2");
    assert_eq!(docker.info("{{json .Labels}}"), r#"["team=infra"]"#);
    let text = env.ok(&["status"]);
    assert!(text.contains("last error:  daemon: dockerd did not start"), "{text}");

    // A good file again clears the error (a restart: dockerd's reload would keep the values
    // of keys taken out of the file).
    assert_eq!(env.ok(&["plan", "daemon", "{}"]).trim(), "daemon-restart: daemon (daemon-restart)");
    env.ok(&["set", "daemon", "{}", "--wait", "--timeout", "240"]);
    assert!(status(&env)["last_error"].is_null());
    assert_eq!(docker.info("{{.Debug}}"), "false");
    assert_eq!(
        docker.ok(&["run", "--rm", "cairn-test/busybox:1", "echo", "still"]).trim(),
        "still"
    );

    // A killed control plane: the next `up` adopts the VM, and its socket reaches the same
    // dockerd, with the image still there.
    let s = status(&env);
    let (up_pid, dockerd) = (s["pid"].as_u64().expect("pid"), dockerd_pid(&s));
    // SAFETY: kill(2) on the cairn up process this test started.
    unsafe {
        libc::kill(up_pid as libc::pid_t, libc::SIGKILL);
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    up_detached(&env, "docker");
    let s = wait_for(&env, "the engine after adoption", |s| {
        s["adopted"] == true && s["docker"]["forward"] == "listening"
    });
    assert_eq!(dockerd_pid(&s), dockerd, "adopting touches neither the VM nor dockerd: {s:#}");
    assert_eq!(
        docker.ok(&["run", "--rm", "cairn-test/busybox:1", "echo", "adopted"]).trim(),
        "adopted"
    );

    // A key new in dockerd 26 is taken; one dockerd does not know is refused in its words.
    let s = status(&env);
    let before = dockerd_pid(&s);
    let new_keys = r#"{"default-network-opts": {"bridge": {"com.docker.network.driver.mtu": "1400"}}, "log-format": "json"}"#;
    env.ok(&["set", "daemon", new_keys, "--wait", "--timeout", "240"]);
    let s = status(&env);
    assert!(s["last_error"].is_null(), "{s:#}");
    assert!(dockerd_pid(&s) != before, "a restart key: {s:#}");
    let out = env.run(&[
        "set",
        "daemon",
        r#"{"no-such-key": true}"#,
        "--force",
        "--wait",
        "--timeout",
        "240",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dockerd --validate refused it"), "{stderr}");
    assert!(stderr.contains("no-such-key"), "{stderr}");
    assert!(stderr.contains("don't match any configuration option"), "dockerd's: {stderr}");
    assert_eq!(dockerd_pid(&status(&env)), dockerd_pid(&s), "the running dockerd stays");

    env.ok(&["down"]);
    assert!(!socket.exists(), "down removes the docker socket");
    // The context stays, pointing at a socket that refuses.
    let after = context(&["info"]);
    assert!(!after.status.success(), "no engine after down");
    let listed = crate::util::succeeded(
        Command::new(env.bin().join("docker"))
            .args(["context", "inspect", "cairn", "--format", "{{.Endpoints.docker.Host}}"])
            .env("DOCKER_CONFIG", env.docker_config())
            .output()
            .expect("docker runs"),
        "docker context inspect",
    );
    assert_eq!(listed.trim(), host);
}
