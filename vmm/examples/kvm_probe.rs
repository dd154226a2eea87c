//! What this host's KVM can do, for scripts (tests/run.sh picks the KVM tests by it): prints
//! `kvm: none` (no usable /dev/kvm), `kvm: no-linux: WHY` (simple guests only) or
//! `kvm: linux`; the exit code says the same: 0 linux, 3 no-linux, 4 none.

fn main() {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        println!("kvm: none");
        std::process::exit(4);
    }
    match cairn_vmm::machine::probe::can_run_linux() {
        Ok(()) => println!("kvm: linux"),
        Err(why) => {
            println!("kvm: no-linux: {why}");
            std::process::exit(3);
        }
    }
}
