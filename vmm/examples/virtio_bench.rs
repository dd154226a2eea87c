//! A 9P round trip over virtio-9p (the test guest's polling driver, through the embedded VMM's
//! device and cairn-9p's in-process session) against the same request over cairn-9p's unix
//! socket (the project's client), same server, same file: a Tread of the hostname key. And the
//! transport's own floor: a virtio-rng request, whose device does next to nothing. Run by
//! tests/bench/vmm.sh.
//!
//! usage: virtio_bench ROUNDS RUNS
//! The guest's cost per round trip is the difference between a boot that reads ROUNDS more
//! times and one that does not, over ROUNDS, so boot and poweroff cancel out. Medians of RUNS.

#[path = "../tests/support/testguest.rs"]
mod testguest;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_vmm::machine::{Config, Machine};
use cairn_vmm::virtio::{ninep::NinePDevice, rng::Rng, VirtioDevice};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Boots the guest with `device` alone, asking for `reads` more requests with the command-line
/// word `option`; returns how long the VM ran.
fn boot(
    guest: &Path,
    dir: &Path,
    device: Box<dyn VirtioDevice>,
    option: &str,
    reads: u32,
) -> Result<Duration> {
    let console = dir.join("console.log");
    let _ = std::fs::remove_file(&console);
    let start = Instant::now();
    let mut machine = Machine::start(Config {
        memory_mib: 64,
        ncpu: 1,
        kernel: guest.to_owned(),
        initrd: None,
        cmdline: format!("cairn.poweroff=0x3c0 {option}={reads}"),
        console: console.clone(),
        console_limit: 1 << 20,
        devices: vec![device],
        devices_on_cmdline: true,
    })?;
    machine.wait();
    let elapsed = start.elapsed();
    let text = std::fs::read_to_string(&console)?;
    if reads > 0 && !text.contains(&format!("{reads} more times")) {
        return Err(format!("the guest did not finish its reads; console:\n{text}").into());
    }
    Ok(elapsed)
}

/// The median cost of one more request, over `runs` pairs of boots.
fn per_request(
    runs: usize,
    rounds: u32,
    mut boot_with: impl FnMut(u32) -> Result<Duration>,
) -> Result<Duration> {
    let mut per_read = Vec::new();
    for _ in 0..runs {
        let once = boot_with(0)?;
        let many = boot_with(rounds)?;
        per_read.push(many.saturating_sub(once) / rounds);
    }
    Ok(median(per_read))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median time of one Tread over the unix socket.
async fn over_unix(
    fs: Arc<cairn_9p::Fs>,
    dir: &Path,
    rounds: u32,
    runs: usize,
) -> Result<Duration> {
    let socket = dir.join("9p.sock");
    let listener = cairn_9p::transport::bind_unix(&socket)?;
    tokio::spawn(cairn_9p::transport::serve_unix_listener(fs, listener));
    let stream = tokio::net::UnixStream::connect(&socket).await?;
    let mut client = cairn_9p::client::Client::connect(stream, 8192).await?;
    let fid = client.walk("branch/master/ro/etc/hostname").await?;
    client.open(fid, 0).await?;
    let mut per_read = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        for _ in 0..rounds {
            client.read_at(fid, 0).await?;
        }
        per_read.push(start.elapsed() / rounds);
    }
    Ok(median(per_read))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, rounds, runs] = args.as_slice() else {
        return Err("usage: virtio_bench ROUNDS RUNS".into());
    };
    let (rounds, runs): (u32, usize) = (rounds.parse()?, runs.parse()?);
    let dir = tempfile::tempdir()?;
    let guest = testguest::build(dir.path());
    let host = cairn_schema::Host { ram_mib: 8192, cores: 4, disk_mib: 0 };
    let db = Arc::new(cairn_db::Db::init(&dir.path().join("db"), host)?);
    let mut tx = db.transaction(cairn_db::CONFIG_BRANCH)?;
    tx.set_key("hostname", b"bench")?;
    tx.commit()?;
    let fs = Arc::new(cairn_9p::Fs::new(db));
    let runtime = tokio::runtime::Runtime::new()?;
    let _guard = runtime.enter();

    let handle = runtime.handle().clone();
    let virtio = per_request(runs, rounds, |n| {
        let device = Box::new(NinePDevice::new("db", fs.clone(), handle.clone()));
        boot(&guest, dir.path(), device, "cairn.bench_9p", n)
    })?;
    let rng = per_request(runs, rounds, |n| {
        boot(&guest, dir.path(), Box::new(Rng::default()), "cairn.bench_rng", n)
    })?;
    let unix = runtime.block_on(over_unix(fs, dir.path(), rounds, runs))?;
    println!("9P Tread round trip over virtio-9p:  {virtio:?} (median of {runs} x {rounds})");
    println!("9P Tread round trip over unix socket: {unix:?} (median of {runs} x {rounds})");
    println!("virtio / unix: {:.2}", virtio.as_secs_f64() / unix.as_secs_f64());
    println!("virtio-rng round trip (the transport alone): {rng:?} (median of {runs} x {rounds})");
    Ok(())
}
