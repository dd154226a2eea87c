//! `cairn status`: what `cairn up` last wrote, and whether it still runs.

use cairn::up::status::{alive, Status};

use super::Ctx;
use crate::output::Mode;

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let home = cairn::home::cairn_home()?;
    let run = cairn::up::run_dir(&home);
    let mut status = Status::load(&run.status()).unwrap_or_default();
    if !alive(status.pid) {
        status.vm = cairn::up::status::VmState::Stopped;
        status.vm_pid = None;
    }
    // Values in the database that the schema refuses (written around cairn): the VM cannot
    // be running what they say, so status says so.
    let invalid: Vec<String> = match ctx.open() {
        Ok(db) => db
            .snapshot_bounded(cairn::db::CONFIG_BRANCH)
            .map(|bounded| {
                super::list::invalid_values(&bounded, db.host())
                    .into_iter()
                    .map(|(_, why)| why)
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if matches!(ctx.mode, Mode::Json) {
        let mut json = serde_json::to_value(&status)?;
        if let Some(object) = json.as_object_mut() {
            object.insert("invalid_values".into(), serde_json::json!(invalid));
        }
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let none = || "-".to_owned();
    match &status.paused {
        Some(paused) if status.vm == cairn::up::status::VmState::Paused => {
            println!("vm:          paused: {}", paused.why)
        }
        _ => println!("vm:          {}", status.vm),
    }
    if let Some(backend) = status.backend {
        println!("backend:     {} ({})", backend.as_str(), status.backend_reason);
    }
    println!("config head: {}", status.config_head.clone().unwrap_or_else(none));
    for why in &invalid {
        println!("invalid:     {why}");
    }
    println!("applied:     {}", status.applied_commit.clone().unwrap_or_else(none));
    if let Some(attempted) = &status.attempted_commit {
        println!("applying:    {attempted}");
    }
    if let Some(plan) = &status.plan {
        let keys: Vec<String> =
            plan.steps.iter().map(|s| format!("{} ({})", s.key, s.class.as_str())).collect();
        println!("plan:        {}: {}", plan.action.as_str(), keys.join(", "));
    }
    if let Some(guest) = &status.guest {
        println!(
            "guest:       {} MiB, {} cpus, hostname {}, boot {}",
            guest.memory_mib, guest.ncpu, guest.hostname, guest.boot_id
        );
    }
    if let Some(guest) = status.guest.as_ref().filter(|g| !g.disk.is_empty()) {
        let mib = |b: u64| b >> 20;
        match guest.disk_size_bytes {
            0 => println!("disk:        {}", guest.disk),
            size => println!(
                "disk:        {} MiB of {} MiB used, {}",
                mib(guest.disk_used_bytes),
                mib(size),
                guest.disk
            ),
        }
    }
    if let Some(clock) = &status.clock {
        println!("clock:       {}", describe_clock(clock));
    }
    if let Some(sharing) = &status.sharing {
        println!("sharing:     {}", sharing.mode);
        if !sharing.events.is_empty() {
            println!("  events:    {}", sharing.events);
        }
        for share in &sharing.shares {
            println!("  shared:    {} {}", share.path, share.state);
        }
        for hidden in &sharing.hidden {
            println!(
                "  hidden:    {hidden} (empty and read-only in the VM: it holds the configuration)"
            );
        }
    }
    if let Some(net) = &status.network {
        print_network(net);
    }
    if let (Some(docker), Some(guest)) = (&status.docker, &status.guest) {
        let pid = match guest.dockerd_pid {
            0 => String::new(),
            pid => format!(" (pid {pid})"),
        };
        println!("dockerd:     {}{pid}", guest.dockerd);
        println!("docker:      DOCKER_HOST=unix://{} ({})", docker.socket, docker.forward);
        if let Some(context) = &docker.context {
            println!("context:     docker --context {context}");
        }
        for port in &docker.ports {
            let container = port.container.as_deref().unwrap_or("(a container)");
            println!("  published: {} -> {container} {} {}", port.host, port.target, port.state);
        }
    }
    println!("restarts:    {} (reboots for changes: {})", status.restarts, status.reboots);
    if let Some(error) = &status.last_error {
        let key = error.key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default();
        println!("last error:  {key}{}", error.message);
    }
    Ok(())
}

/// The last check of the guest's clock, in a line.
fn describe_clock(clock: &cairn::up::clock::ClockStatus) -> String {
    use cairn::up::clock::Action;
    let ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(clock.at);
    let when = format!("{} check {ago} s ago", clock.reason.as_str());
    if let Some(error) = &clock.error {
        return format!("not checked ({when}): {error}");
    }
    let offset = clock.offset_us as f64 / 1000.0;
    let side = if offset < 0.0 { "behind" } else { "ahead of" };
    let done = match clock.action {
        Action::None => "left as it was",
        Action::Stepped => "stepped to the host's",
        Action::Slewed => "slewed toward the host's",
    };
    format!(
        "the guest was {:.1} ms {side} the host's ({when}, round trip {:.1} ms); {done}",
        offset.abs(),
        clock.round_trip_us as f64 / 1000.0
    )
}

fn print_network(net: &cairn::up::status::Network) {
    let c = &net.counters;
    let resolvers = if net.resolvers.is_empty() { "none".into() } else { net.resolvers.join(" ") };
    println!("network:     {}, mtu {}, dns via {resolvers}", net.mode, net.mtu);
    println!(
        "  traffic:   {} frames in, {} out; tcp {} open ({} opened, {} refused); udp {} flows",
        c.frames_in, c.frames_out, c.tcp_flows, c.tcp_opened, c.tcp_refused, c.udp_flows
    );
    println!(
        "  refused:   {} malformed, {} dropped, {} over limits",
        c.malformed, c.dropped, c.over_limit
    );
    for forward in &net.forwards {
        println!("  forward:   {} {}", forward.forward, forward.state);
    }
}
