//! The guest image: Debian 13's kernel, the modules the guest needs, busybox-static and the
//! cairn binary as `/init` (it runs the guest agent when it is PID 1), packed as a cpio
//! initramfs. Each flavour adds programs from Debian packages ([`bundle`]): e2fsprogs for the
//! data disk, and for the docker flavour Debian's Docker engine, which goes on a read-only
//! system disk of its own ([`system`]) rather than into the initramfs. Packages come through
//! the builder's own apt state, never the host's (`debian`).
//!
//! Built once and cached in a directory with a manifest of its inputs (package versions, the
//! agent's sha256); [`ensure`] rebuilds only when an input changed.

pub mod bundle;
mod debian;
mod modules;
pub mod system;

pub use debian::SUITE;
pub use system::Layout;

use std::collections::BTreeMap;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The .deb of `package` for the foreign architecture `arch` (Debian's name: `arm64`) from
/// [`SUITE`], through apt state of its own under `cache`: test images of other architectures
/// (busybox-static:arm64) come from the same archive, verified the same way, as the guest.
pub fn foreign_package(cache: &Path, arch: &'static str, package: &str) -> Result<PathBuf, Error> {
    let apt = debian::Apt::for_arch(cache, arch)?;
    apt.update(false)?;
    let version = apt.version(package)?;
    apt.fetch(package, &version, cache)
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why the image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Apt(String),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel package has no {0}")]
    Missing(String),
    #[error("{0}")]
    Tool(String),
    #[error("{program} loads {library}, which no package of its bundle brings: add its package")]
    Library { program: String, library: String },
    #[error("{path} is not an ELF file the builder can read: {reason}")]
    Elf { path: String, reason: String },
    #[error("decompressing module {module}: {reason}")]
    Module { module: String, reason: String },
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_owned(), source }
    }
}

/// Which image: the agent alone, or the agent with the Docker engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    Base,
    Docker,
}

impl Flavour {
    /// The image's directory under the data directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Flavour::Base => "guest",
            Flavour::Docker => "guest-docker",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavour::Base => "base",
            Flavour::Docker => "docker",
        }
    }
}

/// What an image was built from; equal manifests mean the same image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The Debian release every package came from.
    pub suite: String,
    pub flavour: Flavour,
    pub layout: Layout,
    /// The flavour's extra packages and their versions (the docker flavour's engine).
    #[serde(default)]
    pub packages: BTreeMap<String, String>,
    pub kernel_package: String,
    pub kernel_version: String,
    pub busybox_version: String,
    /// sha256 of the binary installed as /init.
    pub agent_sha256: String,
    /// sha256 of the outputs, to notice a damaged cache.
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    /// The system disk's, in that layout.
    #[serde(default)]
    pub system_sha256: Option<String>,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The read-only system disk, in that layout.
    pub system: Option<PathBuf>,
    pub manifest: Manifest,
    /// The docker flavour's Docker CLI for the host (from the same docker.io package).
    pub docker_cli: Option<PathBuf>,
}

/// Whether to ask apt for the newest versions of the image's packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Only when there is no image yet (`cairn up`): a built image whose agent is this cairn
    /// is used as it is, without a single package look-up (they took seconds each).
    IfMissing,
    /// Always (`cairn guest build`): a newer package is a rebuild.
    Always,
}

/// Where the image lives and what goes in it.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The image directory (vmlinuz, initrd.img, manifest.json).
    pub dir: PathBuf,
    /// Where downloaded packages are kept.
    pub cache: PathBuf,
    /// The agent binary (a static cairn).
    pub agent: PathBuf,
    pub flavour: Flavour,
    pub layout: Layout,
    pub resolve: Resolve,
}

/// 5: Debian 13 from the builder's own apt state.
const FORMAT: u32 = 5;

/// The sha256 of a file, in hex.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

/// The image for `inputs`, built if missing or out of date. `progress` hears each stage.
pub fn ensure(inputs: &Inputs, progress: &mut dyn FnMut(&str)) -> Result<Image, Error> {
    let agent_sha256 = sha256_file(&inputs.agent)?;
    let (kernel, initrd) = (inputs.dir.join("vmlinuz"), inputs.dir.join("initrd.img"));
    let cli = inputs.dir.join("docker");
    let docker_cli = (inputs.flavour == Flavour::Docker).then(|| cli.clone());
    let system_path = inputs.dir.join("system.erofs");
    let system = (inputs.layout == Layout::SystemDisk).then(|| system_path.clone());
    let manifest_path = inputs.dir.join("manifest.json");
    let old = std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
    let intact = |old: &Manifest| {
        sha256_file(&kernel).ok().as_ref() == Some(&old.kernel_sha256)
            && sha256_file(&initrd).ok().as_ref() == Some(&old.initrd_sha256)
            && docker_cli.as_ref().is_none_or(|cli| cli.exists())
            && system.as_ref().is_none_or(|s| sha256_file(s).ok() == old.system_sha256)
    };
    if let Some(old) = &old {
        let current = old.format == FORMAT
            && old.flavour == inputs.flavour
            && old.layout == inputs.layout
            && old.agent_sha256 == agent_sha256;
        if inputs.resolve == Resolve::IfMissing && current && intact(old) {
            return Ok(Image { kernel, initrd, system, manifest: old.clone(), docker_cli });
        }
    }
    let apt = debian::Apt::new(&inputs.cache)?;
    progress(&format!("guest image: reading Debian {}'s package lists", debian::SUITE));
    apt.update(inputs.resolve == Resolve::Always)?;
    let kernel_package = apt.dependency("linux-image-amd64", "linux-image-")?;
    let kernel_version = apt.version(&kernel_package)?;
    let busybox_version = apt.version("busybox-static")?;
    let bundles = bundle::of(inputs.flavour);
    let packages = bundle::versions(&apt, bundles)?;
    if let Some(old) = old {
        let same_inputs = old.format == FORMAT
            && old.suite == debian::SUITE
            && old.flavour == inputs.flavour
            && old.layout == inputs.layout
            && old.packages == packages
            && old.kernel_package == kernel_package
            && old.kernel_version == kernel_version
            && old.busybox_version == busybox_version
            && old.agent_sha256 == agent_sha256;
        if same_inputs && intact(&old) {
            return Ok(Image { kernel, initrd, system, manifest: old, docker_cli });
        }
        progress("guest image: inputs changed, rebuilding");
    }
    progress(&format!("guest image: fetching {kernel_package} {kernel_version}"));
    let kernel_deb = apt.fetch(&kernel_package, &kernel_version, &inputs.cache)?;
    progress(&format!("guest image: fetching busybox-static {busybox_version}"));
    let busybox_deb = apt.fetch("busybox-static", &busybox_version, &inputs.cache)?;
    std::fs::create_dir_all(&inputs.dir).map_err(|e| Error::io(&inputs.dir, e))?;
    let work = inputs.dir.join("build.tmp");
    let _ = std::fs::remove_dir_all(&work);
    progress("guest image: unpacking");
    debian::unpack(&kernel_deb, &work.join("kernel"))?;
    debian::unpack(&busybox_deb, &work.join("busybox"))?;
    let engine = work.join("bundles");
    bundle::unpack(&apt, &packages, &inputs.cache, &engine, progress)?;
    let release = kernel_package.trim_start_matches("linux-image-");
    let vmlinuz = work.join("kernel/boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.exists() {
        return Err(Error::Missing(format!("boot/vmlinuz-{release}")));
    }
    progress("guest image: packing the initramfs");
    // Debian 13 has merged /usr: the modules and busybox sit under usr/.
    let modules = work.join("kernel/usr/lib/modules").join(release).join("kernel");
    let manifest_so_far = Manifest {
        format: FORMAT,
        suite: debian::SUITE.to_owned(),
        flavour: inputs.flavour,
        layout: inputs.layout,
        packages,
        kernel_package,
        kernel_version,
        busybox_version,
        agent_sha256,
        kernel_sha256: String::new(),
        initrd_sha256: String::new(),
        system_sha256: None,
    };
    let mut extra = bundle::entries(&engine, bundles)?;
    if let Some(system) = &system {
        progress("guest image: making the system disk (erofs)");
        let (initramfs, on_disk) = system::split(extra);
        system::build(&on_disk, &work.join("system"), system)?;
        extra = initramfs;
    }
    let archive = initramfs(
        &modules,
        &work.join("busybox/usr/bin/busybox"),
        &inputs.agent,
        &manifest_so_far,
        extra,
    )?;
    if docker_cli.is_some() {
        let from = engine.join(bundle::CLI);
        std::fs::copy(&from, &cli).map_err(|e| Error::io(&from, e))?;
    }
    let tmp_initrd = inputs.dir.join("initrd.img.tmp");
    std::fs::write(&tmp_initrd, &archive).map_err(|e| Error::io(&tmp_initrd, e))?;
    std::fs::rename(&tmp_initrd, &initrd).map_err(|e| Error::io(&initrd, e))?;
    std::fs::copy(&vmlinuz, &kernel).map_err(|e| Error::io(&kernel, e))?;
    let _ = std::fs::remove_dir_all(&work);
    let manifest = Manifest {
        kernel_sha256: sha256_file(&kernel)?,
        initrd_sha256: hex(&Sha256::digest(&archive)),
        system_sha256: system.as_ref().map(|s| sha256_file(s)).transpose()?,
        ..manifest_so_far
    };
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    std::fs::write(&manifest_path, json).map_err(|e| Error::io(&manifest_path, e))?;
    progress("guest image: ready");
    Ok(Image { kernel, initrd, system, manifest, docker_cli })
}

/// The busybox applets the image links in /bin: every one this busybox has (`busybox --list`),
/// so that `cairn shell -- date` finds `date` as a Debian system would. A name that some other
/// entry of the image already takes keeps that entry.
fn applets(busybox: &Path) -> Result<Vec<String>, Error> {
    let listed = std::process::Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|e| Error::Tool(format!("{} --list: {e}", busybox.display())))?;
    if !listed.status.success() {
        return Err(Error::Tool(format!("{} --list: {}", busybox.display(), listed.status)));
    }
    let text = String::from_utf8_lossy(&listed.stdout);
    let mut names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && !name.contains('/') && *name != "busybox")
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// One file of the initramfs.
#[derive(Debug)]
pub enum Entry {
    Dir,
    /// A file, mode 0755 (programs and libraries alike).
    Exe(Vec<u8>),
    /// A file to read, mode 0644.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Link(String),
}

fn initramfs(
    modules: &Path,
    busybox: &Path,
    agent: &Path,
    manifest: &Manifest,
    extra: Vec<(String, Entry)>,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut ino = 1;
    let mut add = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]| -> Result<(), Error> {
        ino += 1;
        let mut w = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(mode)
            .nlink(1)
            .write(out, data.len() as u32);
        w.write_all(data).map_err(|e| Error::io(Path::new(name), e))?;
        w.finish().map_err(|e| Error::io(Path::new(name), e))?;
        Ok(())
    };
    const DIR: u32 = 0o040755;
    const EXE: u32 = 0o100755;
    const FILE: u32 = 0o100644;
    const LINK: u32 = 0o120777;
    for dir in [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "etc",
        "etc/docker",
        "lib",
        "lib/modules",
        "Database",
    ] {
        add(&mut out, dir, DIR, &[])?;
    }
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    add(&mut out, "init", EXE, &read(agent)?)?;
    // dockerd's userland proxy: the agent's binary, which acts by the name it is run as.
    add(&mut out, "sbin/cairn-port-proxy", LINK, b"/init")?;
    add(&mut out, "bin/busybox", EXE, &read(busybox)?)?;
    for applet in applets(busybox)? {
        let name = format!("bin/{applet}");
        if !extra.iter().any(|(taken, _)| *taken == name) {
            add(&mut out, &name, LINK, b"busybox")?;
        }
    }
    // The agent loads them in the order of lib/modules/order: each after its dependencies.
    let mut order = String::new();
    for (file, bytes) in modules::resolve(modules, modules::WANTED)? {
        add(&mut out, &format!("lib/modules/{file}"), FILE, &bytes)?;
        order.push_str(&format!("{file}\n"));
    }
    add(&mut out, "lib/modules/order", FILE, order.as_bytes())?;
    for (name, entry) in extra {
        match entry {
            Entry::Dir => add(&mut out, &name, DIR, &[])?,
            Entry::Exe(data) => add(&mut out, &name, EXE, &data)?,
            Entry::File(data) => add(&mut out, &name, FILE, &data)?,
            Entry::Link(target) => add(&mut out, &name, LINK, target.as_bytes())?,
        }
    }
    let json = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    add(&mut out, "etc/cairn-image.json", FILE, &json)?;
    let out = cpio::newc::trailer(out).map_err(|e| Error::io(Path::new("TRAILER!!!"), e))?;
    Ok(out)
}
