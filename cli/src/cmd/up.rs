//! `cairn up`, `cairn down` and `cairn guest build`.

use std::io::{BufRead, Seek};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn::up::status::{alive, Status, VmState};

use super::Ctx;

fn home() -> anyhow::Result<PathBuf> {
    Ok(cairn::home::cairn_home()?)
}

/// How long `up --detach` waits for the guest's first report (a first image build included).
const DETACH_WAIT: Duration = Duration::from_secs(600);

/// What `up` boots: a kernel and initramfs of the user's, or a built image of a flavour.
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub flavour: Option<cairn::image::Flavour>,
}

pub fn run(ctx: &Ctx, detach: bool, reprobe: bool, image: Image) -> anyhow::Result<()> {
    let home = home()?;
    if detach {
        return detach_up(ctx, &home, reprobe, image);
    }
    let Image { kernel, initrd, flavour } = image;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let options =
        cairn::up::Options { home, db: ctx.db_path.clone(), kernel, initrd, flavour, reprobe };
    cairn::up::run(options, &mut |line| eprintln!("cairn up: {line}"))?;
    Ok(())
}

/// Starts `cairn up` in the background, then follows its log until the guest has applied the
/// configuration (or the process failed).
fn detach_up(ctx: &Ctx, home: &std::path::Path, reprobe: bool, image: Image) -> anyhow::Result<()> {
    let run = cairn::up::run_dir(home);
    std::fs::create_dir_all(&run.0)?;
    if let Some(pid) = running(home) {
        bail!("cairn up is already running (pid {pid}); `cairn down` stops it");
    }
    let _ = std::fs::remove_file(run.status());
    let log = std::fs::OpenOptions::new().create(true).append(true).open(run.log())?;
    let start = log.metadata().map_or(0, |m| m.len());
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("--db").arg(&ctx.db_path).arg("up");
    if reprobe {
        command.arg("--reprobe");
    }
    if let (Some(k), Some(i)) = (image.kernel, image.initrd) {
        command.arg("--kernel").arg(k).arg("--initrd").arg(i);
    }
    if let Some(flavour) = image.flavour {
        command.arg("--flavour").arg(flavour.name());
    }
    command.env("CAIRN_HOME", home).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // The child leaves our session, so that it outlives this terminal.
    cairn::process::detach(&mut command);
    let mut child = command.spawn().context("starting cairn up in the background")?;
    let mut reader = std::io::BufReader::new(std::fs::File::open(run.log())?);
    reader.seek(std::io::SeekFrom::Start(start))?;
    let deadline = Instant::now() + DETACH_WAIT;
    loop {
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            eprint!("{line}");
            line.clear();
        }
        if let Some(status) = Status::load(&run.status()) {
            if status.applied_commit.is_some() && status.applied_commit == status.config_head {
                println!(
                    "cairn up: running (pid {}), applied {}",
                    status.pid,
                    status.applied_commit.unwrap_or_default()
                );
                if let Some(docker) = &status.docker {
                    println!("DOCKER_HOST=unix://{}", docker.socket);
                }
                return Ok(());
            }
            // The guest said it cannot apply the configuration: waiting longer changes
            // nothing. The VM stays up for `cairn logs` and `cairn status`.
            if let Some(error) = &status.last_error {
                if error.commit.is_some() && error.commit == status.config_head {
                    let key = error.key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default();
                    bail!(
                        "the guest could not apply {}: {key}{}; cairn up keeps running (pid {}): see `cairn status` and `cairn logs`",
                        status.config_head.unwrap_or_default(),
                        error.message,
                        status.pid
                    );
                }
            }
        }
        if let Some(exit) = child.try_wait()? {
            bail!("cairn up stopped ({exit}); see {}", run.log().display());
        }
        if Instant::now() > deadline {
            bail!("the guest did not report within {DETACH_WAIT:?}; cairn up still runs (see `cairn status`)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of a running `cairn up` for this data directory: the one holding its lock, so a
/// recycled pid is never taken for it.
fn running(home: &std::path::Path) -> Option<u32> {
    cairn::up::instance::running(&cairn::up::run_dir(home).pid())
}

pub fn down() -> anyhow::Result<()> {
    let home = home()?;
    let Some(pid) = running(&home) else {
        match cairn::up::stop_left_running(&home) {
            Some(vm) => {
                eprintln!("cairn down: stopped the VM (pid {vm}) left by a killed cairn up")
            }
            None => eprintln!("cairn down: cairn up is not running"),
        }
        return Ok(());
    };
    cairn::process::terminate(pid).with_context(|| format!("stopping cairn up (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > deadline {
            bail!("cairn up (pid {pid}) did not stop within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("cairn down: stopped (pid {pid})");
    Ok(())
}

pub fn build_image(flavour: cairn::image::Flavour) -> anyhow::Result<()> {
    let home = home()?;
    let cache = std::env::var_os("CAIRN_CACHE").map_or_else(|| home.join("cache"), PathBuf::from);
    let agent = std::env::current_exe()?;
    let layout = cairn::image::Layout::for_flavour(flavour);
    let inputs = cairn::image::Inputs {
        dir: home.join(layout.dir_name(flavour)),
        cache,
        agent,
        flavour,
        layout,
        resolve: cairn::image::Resolve::Always,
    };
    let image = cairn::image::ensure(&inputs, &mut |line| eprintln!("{line}"))?;
    println!("kernel {}", image.kernel.display());
    println!("initrd {}", image.initrd.display());
    if let Some(system) = image.system {
        println!("system {}", system.display());
    }
    if let Some(cli) = image.docker_cli {
        println!("docker {}", cli.display());
    }
    Ok(())
}

/// `cairn docker-env`: DOCKER_HOST for the running VM's engine, as shell lines.
pub fn docker_env() -> anyhow::Result<()> {
    let home = home()?;
    let run = cairn::up::run_dir(&home);
    if running(&home).is_none() {
        bail!("cairn up is not running; start it with `cairn up --detach`");
    }
    let status = Status::load(&run.status()).unwrap_or_default();
    let Some(docker) = status.docker else {
        bail!("the VM runs without the Docker engine (the base image, or network=hostnet)");
    };
    println!("export DOCKER_HOST=unix://{}", docker.socket);
    if let Some(cli) = docker.cli {
        println!("# the Docker CLI of the engine's package: {cli}");
    }
    Ok(())
}

/// Asks the running `cairn up` to stop, start or restart the VM, and waits until it has.
pub fn vm(action: crate::args::VmAction) -> anyhow::Result<()> {
    use crate::args::VmAction;
    let home = home()?;
    let run = cairn::up::run_dir(&home);
    if running(&home).is_none() {
        bail!("cairn up is not running; start it with `cairn up --detach`");
    }
    let before = Status::load(&run.status()).unwrap_or_default();
    use cairn::up::control::Request;
    let (word, request) = match action {
        VmAction::Start => ("start", Request::VmStart),
        VmAction::Stop => ("stop", Request::VmStop),
        VmAction::Restart => ("restart", Request::VmRestart),
        VmAction::Pause => ("pause", Request::VmPause),
        VmAction::Resume => ("resume", Request::VmResume),
    };
    let answer = cairn::up::control::ask(&run.control(), request)?;
    if answer != "ok" {
        bail!("cairn vm {word}: {}", answer.trim_start_matches("error: "));
    }
    let boot_of = |s: &Status| s.guest.as_ref().map(|g| g.boot_id.clone());
    let deadline = Instant::now() + DETACH_WAIT;
    loop {
        let now = Status::load(&run.status()).unwrap_or_default();
        let done = match action {
            VmAction::Stop => now.vm == VmState::Stopped,
            VmAction::Pause => now.vm == VmState::Paused,
            VmAction::Resume => now.vm != VmState::Paused,
            _ => now.vm == VmState::Running && boot_of(&now) != boot_of(&before),
        };
        if done {
            eprintln!("cairn vm {word}: done");
            return Ok(());
        }
        if Instant::now() > deadline {
            let why = format!("cairn vm {word}: not done within {DETACH_WAIT:?}");
            return Err(crate::exit::TimedOut(why).into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the console log and the control plane's log; with `follow`, keeps printing.
pub fn logs(follow: bool, console_only: bool, control_only: bool) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let run = cairn::up::run_dir(&home()?);
    let mut files = Vec::new();
    if !control_only {
        files.push(run.console());
    }
    if !console_only {
        files.push(run.log());
    }
    let mut offsets = vec![0u64; files.len()];
    let mut out = std::io::stdout().lock();
    loop {
        for (path, offset) in files.iter().zip(offsets.iter_mut()) {
            let Ok(mut file) = std::fs::File::open(path) else { continue };
            let len = file.metadata().map_or(0, |m| m.len());
            if len < *offset {
                *offset = 0; // a new VM started a new console log
            }
            file.seek(std::io::SeekFrom::Start(*offset))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            *offset += bytes.len() as u64;
            out.write_all(&bytes)?;
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
