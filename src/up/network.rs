//! The guest's network as the control loop runs it: a NAT for each boot (qemu's
//! `-netdev stream` socket or the native VMM's virtio-net), given each new commit's mode, MTU,
//! resolvers and forwarded ports live, and its counters copied into the status.

use std::time::{Duration, Instant};

use cairn_agent::report::Report;
use cairn_db::ObjectId;

use super::{status, Controller};
use crate::net::{self, forward::Forward, port::NatPort};
use crate::Error;

/// A forward qemu's own network carries (it takes them at boot).
const HOSTFWD: &str = "listening (qemu's hostfwd)";
/// Why a forward is not carried out under qemu's own network.
const NEXT_BOOT: &str =
    "not forwarded until the next boot: qemu's own network (network=hostnet) takes its forwards at boot";
const NO_IPV6: &str = "not forwarded: qemu's own network (network=hostnet) forwards IPv4 only";

/// How often the network's counters reach the status file.
pub(super) const REFRESH: Duration = Duration::from_secs(2);

/// What a Docker client gets while the VM is paused: an answer from the control plane, in
/// the API's own error format (the CLI prints "Error response from daemon: ..."), rather
/// than a request that hangs until someone resumes the VM.
fn paused_reply() -> Vec<u8> {
    let body = serde_json::json!({
        "message": "the VM is paused: `cairn vm resume` runs it again"
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The docker socket's state, by whether the guest's channel is up: a connection made while
/// it is not waits for it.
fn docker_state(channel_up: bool) -> &'static str {
    if channel_up {
        "listening"
    } else {
        "listening, waiting for the guest's channel"
    }
}

impl Controller {
    /// Whether `rev` asks for qemu's own network (the native VMM has only the NAT).
    pub(super) fn hostnet(&self, rev: &str) -> Result<bool, Error> {
        let mode = self.db.read(rev, "network")?.unwrap_or_default();
        Ok(!self.native && mode.trim_ascii() == b"hostnet")
    }

    /// A NAT for a boot of `commit`'s configuration (its network mode, MTU, resolvers and
    /// forwarded ports), replacing the last one: connected to qemu's socket, or returned as
    /// the port of the native VMM's virtio-net.
    pub(super) fn start_network(&mut self, commit: ObjectId) -> Result<Option<NatPort>, Error> {
        if let Some(task) = self.net_task.take() {
            task.abort();
        }
        self.nat = None;
        let rev = commit.to_string();
        self.configure_published(&rev)?;
        if self.hostnet(&rev)? {
            self.forwards.apply("");
            self.published.0.set_forwards(Vec::new());
            self.published.0.attach_nat(None);
            // The boot of `rev` takes its forwards.
            self.status.network = Some(self.hostnet_status(&rev, Some(&rev))?);
            return Ok(None);
        }
        let config = net::Config::from_db(&self.db, &rev)?;
        let runtime = self.nat_thread.handle().clone();
        let nat = net::Nat::spawn(config.clone(), &runtime);
        self.forwards.attach(nat.control.clone());
        self.published.0.attach_nat(Some(nat.control.clone()));
        self.nat = Some((nat.control, nat.stats));
        self.show_network(&rev, config)?;
        if self.native {
            return Ok(Some(NatPort::new(nat.to_nat, nat.from_nat, &runtime)));
        }
        let follow = net::stream::follow(self.run.net(), nat.to_nat, nat.from_nat);
        self.net_task = Some(runtime.spawn(follow));
        Ok(None)
    }

    /// The forwards of `rev` as qemu's `hostfwd=` values, for a boot on its own network.
    pub(super) fn hostnet_forwards(&self, rev: &str) -> Result<Vec<String>, Error> {
        Ok(self.forwards_of(rev)?.iter().filter_map(Forward::hostfwd).collect())
    }

    fn forwards_of(&self, rev: &str) -> Result<Vec<Forward>, Error> {
        let wanted = self.db.read(rev, "net/port-forwarding")?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&wanted).lines().filter_map(Forward::parse).collect())
    }

    /// The status of qemu's own network under `rev`: no NAT; the forwards it took at the
    /// boot of `booted`, and those it cannot carry (added since, or IPv6).
    fn hostnet_status(&self, rev: &str, booted: Option<&str>) -> Result<status::Network, Error> {
        let booted = match booted {
            Some(booted) => self.forwards_of(booted)?,
            None => Vec::new(),
        };
        let forwards = self
            .forwards_of(rev)?
            .into_iter()
            .map(|forward| {
                let state = match forward.hostfwd() {
                    None => NO_IPV6,
                    Some(_) if booted.contains(&forward) => HOSTFWD,
                    Some(_) => NEXT_BOOT,
                };
                net::forward::ForwardStatus { forward: forward.to_string(), state: state.into() }
            })
            .collect();
        Ok(status::Network { mode: "hostnet".into(), forwards, ..status::Network::default() })
    }

    /// Opens the docker socket when the guest reports an engine (and closes it when a boot
    /// has none): each connection is a stream of the channel to dockerd's own socket in the
    /// guest, whatever the network mode. The status says where it is.
    pub(super) fn show_docker(&mut self, report: &Report) {
        let socket = self.run.docker();
        if !report.has_engine() {
            self.close_docker_socket();
            self.status.docker = None;
            return;
        }
        let forward = match &self.docker_socket {
            Some(_) => docker_state(self.status.channel).to_owned(),
            None => {
                let sessions = self.sessions.subscribe();
                let _entered = self.server.runtime.enter();
                let _ = std::fs::remove_file(&socket);
                match cairn_9p::transport::bind_unix(&socket) {
                    Ok(listener) => {
                        let service = cairn_channel::Service::new(cairn_agent::DOCKER_SERVICE, &[]);
                        let gate = super::pausing::gate(
                            self.paused.clone(),
                            paused_reply(),
                            self.events.clone(),
                        );
                        let task =
                            crate::channel::serve_unix(listener, service, sessions, Some(gate));
                        self.docker_socket = Some(self.server.runtime.spawn(task));
                        docker_state(self.status.channel).to_owned()
                    }
                    Err(e) => format!("cannot listen: {e}"),
                }
            }
        };
        let context = self.status.docker.as_ref().and_then(|d| d.context.clone());
        self.status.docker = Some(status::Docker {
            socket: socket.display().to_string(),
            forward,
            cli: self.docker_cli.as_ref().map(|c| c.display().to_string()),
            context,
            ports: self.published.0.status().1,
        });
    }

    /// Shows in the status whether the docker socket reaches the engine now.
    pub(super) fn show_docker_channel(&mut self) {
        if let (Some(docker), Some(_)) = (&mut self.status.docker, &self.docker_socket) {
            docker.forward = docker_state(self.status.channel).to_owned();
        }
    }

    /// Stops serving the docker socket and removes it.
    pub(super) fn close_docker_socket(&mut self) {
        if let Some(task) = self.docker_socket.take() {
            task.abort();
            let _ = std::fs::remove_file(self.run.docker());
        }
    }

    /// Gives the running NAT `commit`'s network settings and forwarded ports, live.
    pub(super) fn reconfigure_network(&mut self, commit: ObjectId) -> Result<(), Error> {
        let rev = commit.to_string();
        // Under either network: a port published from now on follows the new key.
        self.configure_published(&rev)?;
        let Some((control, _)) = &self.nat else {
            if self.hostnet(&rev)? {
                let booted = self.booted.map(|c| c.to_string());
                self.status.network = Some(self.hostnet_status(&rev, booted.as_deref())?);
            }
            return Ok(());
        };
        let config = net::Config::from_db(&self.db, &rev)?;
        if control.try_send(net::Command::Reconfigure(config.clone())).is_err() {
            tracing::warn!("the NAT did not take the new network settings");
        }
        self.show_network(&rev, config)
    }

    /// Opens and closes the forwarded ports of `rev` and shows the NAT's `config` in status.
    fn show_network(&mut self, rev: &str, config: net::Config) -> Result<(), Error> {
        let forwards = self.db.read(rev, "net/port-forwarding")?.unwrap_or_default();
        let forwards = String::from_utf8_lossy(&forwards);
        self.forwards.apply(&forwards);
        self.published.0.set_forwards(forwards.lines().filter_map(Forward::parse).collect());
        let mode = if config.outbound { "nat" } else { "none" };
        self.status.network = Some(status::Network {
            mode: mode.into(),
            mtu: config.mtu,
            resolvers: config.resolvers.iter().map(|r| r.ip().to_string()).collect(),
            ..status::Network::default()
        });
        self.copy_network_status();
        Ok(())
    }

    /// Where ports published from now on listen on the host (the `external-bind` key).
    fn configure_published(&self, rev: &str) -> Result<(), Error> {
        let external = self.db.read(rev, "net/external-bind")?.unwrap_or_default();
        self.published.0.set_external_bind(external.trim_ascii() == b"true");
        Ok(())
    }

    /// Copies the NAT's counters, the forwards' states and the published ports into the status
    /// now and then, and tries again the forwards whose ports were taken.
    pub(super) fn refresh_network(&mut self) -> bool {
        if self.network_seen.elapsed() < REFRESH {
            return false;
        }
        let ports = self.copy_published();
        let shares = self.refresh_shares();
        self.copy_network_status() | ports | shares
    }

    /// The published ports into the status, when their list changed.
    fn copy_published(&mut self) -> bool {
        let (version, ports) = self.published.0.status();
        let Some(docker) = &mut self.status.docker else { return false };
        if version == self.published.1 {
            return false;
        }
        self.published.1 = version;
        docker.ports = ports;
        true
    }

    fn copy_network_status(&mut self) -> bool {
        self.network_seen = Instant::now();
        // Without a NAT (hostnet) there is nothing to copy.
        let (Some(network), Some((_, stats))) = (&mut self.status.network, &self.nat) else {
            return false;
        };
        self.forwards.retry();
        let before = network.clone();
        network.forwards = self.forwards.status();
        network.counters = stats.snapshot();
        *network != before
    }
}
