//! Boot timings and memory overhead of the embedded VMM with the tiny PVH guest
//! (vmm/tests/guests/tiny.S); run by tests/bench/vmm.sh.
//!
//! usage: boot_bench POWEROFF_ELF HALTING_ELF RUNS
//! Prints the medians of: VMM start to the guest's first console byte (its first instructions
//! write it), and start to poweroff; then the process's RSS while a 256 MiB guest runs, which
//! is the VMM's own overhead (the tiny guest touches a few pages of its memory).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_vmm::machine::{Config, Machine};

fn config(kernel: &Path, console: &Path, memory_mib: u64) -> Config {
    Config {
        memory_mib,
        ncpu: 1,
        kernel: kernel.to_owned(),
        initrd: None,
        cmdline: "console=ttyS0".into(),
        console: console.to_owned(),
        console_limit: 1 << 20,
        devices: Vec::new(),
        devices_on_cmdline: true,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, poweroff, halting, runs] = args.as_slice() else {
        return Err("usage: boot_bench POWEROFF_ELF HALTING_ELF RUNS".into());
    };
    let runs: usize = runs.parse()?;
    let dir = std::env::temp_dir().join(format!("cairn-boot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let console = dir.join("console.log");
    let (mut first, mut total) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        let mut machine = Machine::start(config(Path::new(poweroff), &console, 128))?;
        while std::fs::metadata(&console).map_or(0, |m| m.len()) == 0 {
            std::hint::spin_loop();
        }
        first.push(start.elapsed());
        machine.wait();
        total.push(start.elapsed());
    }
    println!("start -> first guest output: {:?} (median of {runs})", median(first));
    println!("start -> guest poweroff:     {:?} (median of {runs})", median(total));

    let before = rss_kib();
    let mut machine = Machine::start(config(&PathBuf::from(halting), &console, 256))?;
    std::thread::sleep(Duration::from_millis(300));
    let running = rss_kib();
    machine.stop();
    println!("VMM RSS with a 256 MiB guest running: {running} KiB ({before} KiB before the VM)");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
