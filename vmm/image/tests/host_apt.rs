//! The guest image does not depend on the host's apt configuration: with the host's package
//! lists emptied, or its sources pointed at another suite (Debian 12, with docker.io pinned
//! there), the builder resolves and builds the same image from Debian 13 as it does on a
//! plain host. The host's configuration is imposed on every apt command the builder runs with
//! APT_CONFIG, which apt reads before anything else, so it is the strongest a host can say.
//!
//! One test in this file: it sets APT_CONFIG for the whole process.

use std::path::{Path, PathBuf};

fn cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-cache/debs")
}

fn build(dir: &Path) -> cairn_image::Manifest {
    let inputs = cairn_image::Inputs {
        dir: dir.to_owned(),
        cache: cache(),
        // Any static binary does as the agent here: busybox.
        agent: "/bin/busybox".into(),
        flavour: cairn_image::Flavour::Docker,
        layout: cairn_image::Layout::SystemDisk,
        resolve: cairn_image::Resolve::Always,
    };
    cairn_image::ensure(&inputs, &mut |_| {}).expect("the image builds").manifest
}

/// An apt.conf for a host whose own apt state would choose other packages.
fn hostile_host(dir: &Path, lists: &Path) -> PathBuf {
    let prefs = dir.join("preferences.d");
    std::fs::create_dir_all(&prefs).expect("mkdir");
    std::fs::write(
        prefs.join("pin"),
        "Package: docker.io containerd runc linux-image-amd64\nPin: release n=bookworm\n\
         Pin-Priority: 1001\n",
    )
    .expect("write");
    let sources = dir.join("sources.list");
    std::fs::write(&sources, "deb http://deb.debian.org/debian bookworm main\n").expect("write");
    let conf = dir.join("apt.conf");
    std::fs::write(
        &conf,
        format!(
            "Dir::Etc::SourceList \"{}\";\nDir::Etc::PreferencesParts \"{}\";\n\
             Dir::State::Lists \"{}\";\nAPT::Default-Release \"bookworm\";\n",
            sources.display(),
            prefs.display(),
            lists.display()
        ),
    )
    .expect("write");
    conf
}

#[test]
fn the_host_apt_state_changes_nothing_in_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = build(&dir.path().join("plain"));
    assert_eq!(plain.suite, "trixie");
    assert!(plain.packages["docker.io"].starts_with("26."), "{:?}", plain.packages);
    assert!(plain.kernel_package.contains("+deb13"), "{}", plain.kernel_package);

    // Sources on bookworm with the host's real bookworm lists, docker.io pinned there.
    let conf = hostile_host(&dir.path().join("bookworm"), Path::new("/var/lib/apt/lists"));
    std::env::set_var("APT_CONFIG", &conf);
    let other_suite = build(&dir.path().join("other-suite"));
    // No lists at all.
    let empty = dir.path().join("empty-lists");
    std::fs::create_dir_all(empty.join("partial")).expect("mkdir");
    let conf = hostile_host(&dir.path().join("empty"), &empty);
    std::env::set_var("APT_CONFIG", &conf);
    let emptied = build(&dir.path().join("emptied"));
    std::env::remove_var("APT_CONFIG");

    // The same manifest: the same versions, and byte for byte the same kernel, initramfs and
    // system disk.
    assert_eq!(other_suite, plain);
    assert_eq!(emptied, plain);
}
