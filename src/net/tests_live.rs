//! What changes while the NAT runs: forwarded ports added and removed, and new settings.
//! The guest is the smoltcp guest of [`super::tests`]; the host side uses real sockets.

use std::time::Duration;

use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpAddress;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::forward::Forwards;
use super::tests::{config, drain, loopback_server, nat, test_resolver, Guest, GATEWAY};
use super::{Command, Config, Stats};

/// A loopback port nobody listens on (now).
fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    socket.local_addr().expect("address").port()
}

#[tokio::test]
async fn a_forwarded_tcp_port_reaches_a_guest_listener_until_it_is_removed() {
    let mut nat = nat(config());
    let mut forwards = Forwards::new(tokio::runtime::Handle::current());
    forwards.attach(nat.control.clone());
    let port = free_port();
    forwards.apply(&format!("127.0.0.1:{port}:80/tcp\n"));
    assert_eq!(forwards.status()[0].state, "listening");

    let mut guest = Guest::configured();
    let listener = guest.tcp();
    guest.sockets.get_mut::<tcp::Socket>(listener).listen(80).expect("listens");
    let client = tokio::spawn(async move {
        let mut stream =
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
        stream.write_all(b"hello guest").await.expect("writes");
        stream.shutdown().await.expect("shuts down");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("reads");
        reply
    });
    // The guest echoes in upper case and closes after the host's FIN.
    let mut closed = false;
    guest
        .until(&mut nat, "the forwarded connection to finish", |g| {
            let socket = g.sockets.get_mut::<tcp::Socket>(listener);
            while socket.can_recv() {
                let data = socket.recv(|d| (d.len(), d.to_ascii_uppercase())).unwrap_or_default();
                let _ = socket.send_slice(&data);
            }
            if !closed && socket.state() == tcp::State::CloseWait {
                socket.close();
                closed = true;
            }
            client.is_finished()
        })
        .await;
    assert_eq!(client.await.expect("the client"), b"HELLO GUEST");
    let endpoint = guest.sockets.get::<tcp::Socket>(listener).remote_endpoint();
    assert!(endpoint.is_none_or(|e| e.addr == IpAddress::from(GATEWAY)), "{endpoint:?}");
    assert_eq!(Stats::get(&nat.stats.forwarded_in), 1);

    // Removed: the port is closed at once.
    forwards.apply("");
    assert!(forwards.status().is_empty());
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "the forward was removed");
}

#[tokio::test]
async fn a_port_in_use_is_reported_and_the_other_forwards_work() {
    let nat = nat(config());
    let mut forwards = Forwards::new(tokio::runtime::Handle::current());
    forwards.attach(nat.control.clone());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let taken_port = taken.local_addr().expect("address").port();
    let port = free_port();
    forwards.apply(&format!("127.0.0.1:{taken_port}:22/tcp\n127.0.0.1:{port}:80/tcp\n"));
    let status = forwards.status();
    let state = |p: u16| {
        let wanted = format!("127.0.0.1:{p}:");
        status.iter().find(|s| s.forward.starts_with(&wanted)).map(|s| s.state.clone())
    };
    let busy = state(taken_port).expect("listed");
    assert!(busy.contains("cannot listen") && busy.contains("in use"), "{busy}");
    assert_eq!(state(port).as_deref(), Some("listening"));
    // Once the port is free, a retry takes it.
    drop(taken);
    forwards.retry();
    assert!(forwards.status().iter().all(|s| s.state == "listening"), "{:?}", forwards.status());
}

#[tokio::test]
async fn a_forwarded_udp_port_carries_datagrams_and_the_replies() {
    let mut nat = nat(config());
    let mut forwards = Forwards::new(tokio::runtime::Handle::current());
    forwards.attach(nat.control.clone());
    let port = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
        socket.local_addr().expect("address").port()
    };
    forwards.apply(&format!("127.0.0.1:{port}:53/udp\n"));
    let mut guest = Guest::configured();
    let server = guest.udp(53);
    // The guest must have spoken once for the NAT to know its MAC (its DHCP, in real life).
    let other = guest.udp(5000);
    guest
        .sockets
        .get_mut::<udp::Socket>(other)
        .send_slice(b"hi", (IpAddress::from(GATEWAY), 9))
        .expect("queued");
    guest.exchange(&mut nat).await;

    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("binds");
    let mut reply = None;
    let mut buffer = [0u8; 64];
    for _ in 0..2000 {
        if reply.is_some() {
            break;
        }
        client.send_to(b"question", ("127.0.0.1", port)).await.expect("sends");
        for _ in 0..10 {
            guest.exchange(&mut nat).await;
            let socket = guest.sockets.get_mut::<udp::Socket>(server);
            if let Ok((n, meta)) = socket.recv_slice(&mut buffer) {
                assert_eq!(&buffer[..n], b"question");
                socket.send_slice(b"answer", meta.endpoint).expect("queued");
            }
            guest.exchange(&mut nat).await;
            let mut got = [0u8; 64];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(5), client.recv_from(&mut got)).await
            {
                reply = Some(got[..n].to_vec());
                break;
            }
        }
    }
    assert_eq!(reply.as_deref(), Some(&b"answer"[..]));
}

#[tokio::test]
async fn network_none_takes_effect_live() {
    let resolver = test_resolver().await;
    let mut nat = nat(Config { resolvers: vec![resolver], ..Config::default() });
    let mut guest = Guest::configured();
    let handle = guest.udp(5353);
    let forwarded = guest.ask_dns(&mut nat, handle, "example.test").await;
    assert_eq!(forwarded[3] & 0x0f, 0, "the resolver answered");
    assert_eq!(Stats::get(&nat.stats.dns_local), 0);
    let none = Config { resolvers: vec![resolver], outbound: false, ..Config::default() };
    nat.control.send(Command::Reconfigure(none)).await.expect("the NAT runs");
    let local = guest.ask_dns(&mut nat, handle, "example.test").await;
    assert_eq!(local[3] & 0x0f, 2, "SERVFAIL: nothing leaves the gateway with network=none");
    assert_eq!(Stats::get(&nat.stats.dns_local), 1);
}

/// A loopback server that answers each connection with one line and closes it.
async fn one_line_server() -> u16 {
    loopback_server(|mut stream| async move {
        let mut request = [0u8; 64];
        let _ = stream.read(&mut request).await;
        let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nok").await;
    })
    .await
}

#[tokio::test]
async fn many_short_connections_each_end_cleanly() {
    let port = one_line_server().await;
    let mut nat = nat(config());
    let mut guest = Guest::configured();
    for i in 0..200u16 {
        let handle = guest.connect(port, 40000 + i);
        let (mut sent, mut reply) = (false, Vec::new());
        guest
            .until(&mut nat, &format!("connection {i}"), |g| {
                let socket = g.sockets.get_mut::<tcp::Socket>(handle);
                if !sent && socket.can_send() {
                    sent = socket.send_slice(b"GET / HTTP/1.0\r\n\r\n").is_ok();
                }
                drain(socket, &mut reply);
                if socket.state() == tcp::State::CloseWait {
                    socket.close();
                }
                matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait)
            })
            .await;
        assert!(reply.ends_with(b"ok"), "connection {i}: {reply:?}");
        guest.sockets.remove(handle);
    }
}

#[tokio::test]
async fn data_and_fin_in_one_burst_still_get_an_answer() {
    // The guest's request and FIN arrive before the NAT looks at the flow again: the flow
    // goes from SynReceived to CloseWait unseen, and must still be answered and closed.
    let port = one_line_server().await;
    let mut nat = nat(config());
    let mut guest = Guest::configured();
    let handle = guest.connect(port, 41000);
    guest
        .until(&mut nat, "the handshake", |g| g.sockets.get::<tcp::Socket>(handle).may_send())
        .await;
    let socket = guest.sockets.get_mut::<tcp::Socket>(handle);
    socket.send_slice(b"GET / HTTP/1.0\r\n\r\n").expect("queued");
    socket.close();
    let mut reply = Vec::new();
    guest
        .until(&mut nat, "the answer and the NAT's FIN", |g| {
            let socket = g.sockets.get_mut::<tcp::Socket>(handle);
            drain(socket, &mut reply);
            matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait)
        })
        .await;
    assert!(reply.ends_with(b"ok"), "{reply:?}");
}
