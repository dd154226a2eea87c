//! The command line, declared with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  cairn init                              create the database ($CAIRN_HOME/db)
  cairn list                              every setting, its value and what it does
  cairn get memory                        the bare value, for scripts
  cairn set memory 4096                   one key, one commit
  cairn set hypervisor qemu ncpu=4        a key and its options, one commit
  cairn set memory=4G ncpu=2 -m 'bigger'  several keys, one commit, your message
  cairn set daemon @daemon.json           a value from a file (- reads stdin)
  cairn reset memory                      back to the default
  cairn log memory                        every change of memory, old and new value
  cairn diff HEAD~3                       what changed since three commits ago
  cairn rollback 1a2b3c4                  a new commit restoring an old configuration
  cairn export > saved.json && cairn apply saved.json
  git -C \"$(cairn path)\" log --stat        the same history, with plain git

Exit codes: 0 ok, 1 runtime error, 2 usage, 3 value refused by the schema,
            5 conflict (--expect, or the same key changed by another writer).
Output: a table on a terminal, plain lines when piped, JSON with --json.
Colour only on a terminal, never with NO_COLOR set.";

/// cairn: a git-backed configuration database for a managed Linux VM.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// The database directory [default: $CAIRN_HOME/db].
    #[arg(long, global = true, env = "CAIRN_DB", value_name = "DIR")]
    pub db: Option<PathBuf>,

    /// Print data as JSON.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database with every key at its default (or upgrade an existing one).
    Init,
    /// Every key: value, options, what a change does, description.
    #[command(alias = "ls")]
    List,
    /// Print a key's value exactly as stored (`git show master:PATH`).
    Get {
        /// Friendly name or path in the tree.
        key: String,
        /// Read at this branch or commit.
        #[arg(long, default_value = "master")]
        at: String,
    },
    /// Change keys: `set KEY VALUE [KEY=VALUE...]` or `set KEY=VALUE...`, one commit.
    ///
    /// A value `@FILE` is read from FILE and `-` from standard input.
    Set {
        /// KEY VALUE [KEY=VALUE...] or KEY=VALUE...
        #[arg(required = true, num_args = 1.., allow_negative_numbers = true, value_name = "ARGS")]
        args: Vec<String>,
        #[command(flatten)]
        write: WriteOpts,
        /// Accept daemon.json keys the schema does not know (they may stop dockerd).
        #[arg(long)]
        force: bool,
        /// Print what the change would do to the VM (reboot, reload, live) and commit nothing.
        #[arg(long, conflicts_with = "wait")]
        dry_run: bool,
        /// After committing, wait until the guest has applied it (needs `cairn up`).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (exit 4).
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
    },
    /// What changing keys would do to the VM (`set --dry-run`): reboot, network, daemon
    /// restart or reload, or live in the guest.
    Plan {
        /// KEY VALUE [KEY=VALUE...] or KEY=VALUE...
        #[arg(required = true, num_args = 1.., allow_negative_numbers = true, value_name = "ARGS")]
        args: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Wait until the guest has applied COMMIT (default: master's head); fail with the guest's
    /// error if it could not.
    Wait {
        commit: Option<String>,
        /// Give up after this many seconds (exit 4).
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
    },
    /// Put keys back to their defaults.
    Reset {
        /// Keys to reset.
        #[arg(required_unless_present = "all")]
        keys: Vec<String>,
        /// Reset every key.
        #[arg(long, conflicts_with = "keys")]
        all: bool,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// The history of the configuration, or of one key with old and new values.
    Log {
        /// Only the commits that changed this key.
        key: Option<String>,
        /// At most this many commits.
        #[arg(short = 'n', long)]
        limit: Option<usize>,
        /// Start from this branch or commit.
        #[arg(long, default_value = "master")]
        at: String,
    },
    /// What changed between two commits, per key [default: the last commit].
    Diff {
        /// From this commit [default: the parent of TO].
        from: Option<String>,
        /// To this commit [default: master].
        to: Option<String>,
    },
    /// A new commit restoring the configuration of an earlier commit.
    Rollback {
        /// The commit to restore.
        commit: String,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// Every key as one JSON object (input for `apply`).
    Export {
        /// Export this branch or commit.
        #[arg(long, default_value = "master")]
        at: String,
    },
    /// Set many keys from a file, validated as a whole, one commit.
    ///
    /// FILE is a JSON object (as `export` writes) or KEY=VALUE lines; `-` reads standard input.
    Apply {
        file: String,
        #[command(flatten)]
        write: WriteOpts,
        /// Accept daemon.json keys the schema does not know.
        #[arg(long)]
        force: bool,
    },
    /// Edit a key in $VISUAL or $EDITOR; validated when you save.
    Edit {
        key: String,
        #[command(flatten)]
        write: WriteOpts,
        /// Accept daemon.json keys the schema does not know.
        #[arg(long)]
        force: bool,
    },
    /// The keys: types, defaults, what a change does; `schema KEY` for one, `schema daemon` for
    /// daemon.json's keys.
    Schema { key: Option<String> },
    /// Serve the database over 9P (DataKit's layout) until interrupted.
    ///
    /// Prints `unix PATH` and `tcp ADDRESS` on stdout once listening. Logs go to stderr
    /// (CAIRN_LOG=debug for more).
    Serve {
        /// The unix socket [default: $CAIRN_HOME/9p.sock].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Also listen on TCP, e.g. 127.0.0.1:5640 (port 0: any free port).
        #[arg(long, value_name = "ADDR")]
        tcp: Option<std::net::SocketAddr>,
    },
    /// Start the VM with the configuration at master and follow master (Ctrl-C stops).
    ///
    /// Serves the database over 9P, builds the guest image when needed, boots the VM, then
    /// turns every commit into the least disruptive action: live in the guest, or a reboot.
    Up {
        /// Run in the background (logs in $CAIRN_HOME/run/cairn.log); `cairn down` stops it.
        #[arg(long)]
        detach: bool,
        /// Probe the hypervisors again (KVM, the embedded VMM) instead of what was found on
        /// this host before.
        #[arg(long)]
        reprobe: bool,
        /// Boot this kernel instead of the built image (with --initrd).
        #[arg(long, value_name = "FILE", requires = "initrd")]
        kernel: Option<PathBuf>,
        /// Boot this initramfs instead of the built image (with --kernel).
        #[arg(long, value_name = "FILE", requires = "kernel")]
        initrd: Option<PathBuf>,
        /// The image to build and boot [default: docker, or base when the Docker engine's
        /// packages cannot be had].
        #[arg(long, value_enum, conflicts_with = "kernel")]
        flavour: Option<Flavour>,
    },
    /// Prints the shell lines that point the Docker CLI at the VM's engine
    /// (`eval "$(cairn docker-env)"`).
    DockerEnv,
    /// Stop `cairn up` and its VM.
    Down,
    /// Stop, start, restart, pause or resume the VM while `cairn up` keeps running.
    Vm {
        #[arg(value_enum)]
        action: VmAction,
    },
    /// A root shell in the VM, in its own namespaces (not a container's), or CMD run there.
    ///
    /// Without CMD, on a terminal: an interactive shell on a terminal of its own in the guest
    /// (Ctrl-C, job control and the window size reach it). With CMD: standard input, output
    /// and error piped, binary-safe, and CMD's exit code as cairn's own:
    /// `cairn shell -- tar -C /var/lib/docker -c volumes | tar -x`. No engine needed.
    Shell {
        /// Give the process a terminal even with CMD (`cairn shell -t -- top`).
        #[arg(short = 't', long, conflicts_with = "no_tty")]
        tty: bool,
        /// Never give it a terminal.
        #[arg(short = 'T', long)]
        no_tty: bool,
        /// The program to run and its arguments [default: root's login shell].
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// The settings as a local web page: every key, the plan of a change, one commit per save,
    /// the history with rollback, live. Prints its URL with a fresh token.
    Ui {
        /// Where to listen: a loopback address (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Open the desktop's browser on it (xdg-open).
        #[arg(long)]
        open: bool,
    },
    /// The VM's console and the control plane's log.
    Logs {
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
        /// Only the console.
        #[arg(long, conflicts_with = "control")]
        console: bool,
        /// Only the control plane's log.
        #[arg(long)]
        control: bool,
    },
    /// The VM and the control plane: state, backend, config head, applied commit, last error.
    Status,
    /// Checks what cairn runs, one line each (`[OK]` or `[FAIL] why`), and writes an archive of
    /// logs and state for a bug report (secrets masked, mode 0600); exit 1 if a check failed.
    Diagnose,
    /// The engine's data disk: its size, what it takes on the host, what the guest uses.
    Disk {
        #[command(subcommand)]
        command: Option<DiskCommand>,
    },
    /// The guest image.
    Guest {
        #[command(subcommand)]
        command: GuestCommand,
    },
    /// Print the database directory.
    Path,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum VmAction {
    Start,
    Stop,
    Restart,
    /// Stop the vCPUs: the VM keeps its state and uses no CPU; commits wait for `resume`.
    Pause,
    /// Run a paused VM again; its clock is set to the host's.
    Resume,
}

/// What `cairn disk` does beyond showing the disk.
#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Deletes everything the engine keeps (images, containers, volumes) and starts over with
    /// an empty disk; asks first on a terminal.
    Wipe {
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Build (or check) the guest image from Debian packages and this cairn binary.
    Build {
        /// base: the agent alone; docker: with Debian's Docker engine.
        #[arg(long, value_enum, default_value = "docker")]
        flavour: Flavour,
    },
}

/// Which guest image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavour {
    /// The guest agent alone.
    Base,
    /// The agent and Debian's Docker engine (dockerd, containerd, runc).
    Docker,
}

impl From<Flavour> for cairn::image::Flavour {
    fn from(f: Flavour) -> Self {
        match f {
            Flavour::Base => cairn::image::Flavour::Base,
            Flavour::Docker => cairn::image::Flavour::Docker,
        }
    }
}

/// Options of every command that writes.
#[derive(Debug, Args, Clone, Default)]
pub struct WriteOpts {
    /// The commit message [default: generated, e.g. "set memory=4096"].
    #[arg(short, long)]
    pub message: Option<String>,
    /// Refuse (exit 5) unless master is at this commit: compare-and-swap for scripts.
    #[arg(long, value_name = "COMMIT")]
    pub expect: Option<String>,
}
