//! The gateway's DNS: `host.cairn.internal` and `host.docker.internal` (Docker Desktop's name,
//! which images and compose files use) are the host, as the guest sees it, answered here;
//! every other query is forwarded as it is to a resolver of the host (or of the `dns` key) and
//! the answer relayed back, so the guest resolves whatever the host resolves, VPN names
//! included. Only the question is parsed (RFC 1035, 4.1): the rest passes through untouched.

use std::net::Ipv4Addr;

/// The host's name inside the guest.
pub const HOST_NAME: &str = "host.cairn.internal";
/// The same, by Docker Desktop's name.
pub const DOCKER_HOST_NAME: &str = "host.docker.internal";
pub const PORT: u16 = 53;

const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// Header flags of an answer: QR, AA, RD, RA; RCODE 0.
const FLAGS_ANSWER: u16 = 0x8580;
/// The same with RCODE 2, server failure.
const FLAGS_SERVFAIL: u16 = 0x8182;

/// The first question of a query: the name (lower case, dot-separated), its type and class,
/// and where it ends.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    end: usize,
}

/// The question of `query`, if it is a well-formed query with one.
pub fn question(query: &[u8]) -> Option<Question> {
    let header = query.get(..HEADER)?;
    let is_query = header[2] & 0x80 == 0;
    let questions = u16::from_be_bytes([header[4], header[5]]);
    if !is_query || questions == 0 {
        return None;
    }
    let mut at = HEADER;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Compression pointers (0xc0) do not belong in a query's first name.
        if len > 63 {
            return None;
        }
        let label = query.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
    }
    let fixed = query.get(at..at + 4)?;
    Some(Question {
        name: labels.join("."),
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        end: at + 4,
    })
}

/// The reply header and question of `query` with `flags` and `answers` records to follow.
fn reply_head(query: &[u8], question: &Question, flags: u16, answers: u16) -> Vec<u8> {
    let mut reply = Vec::with_capacity(question.end + 16);
    reply.extend_from_slice(&query[..2]); // the id
    reply.extend_from_slice(&flags.to_be_bytes());
    reply.extend_from_slice(&1u16.to_be_bytes()); // one question
    reply.extend_from_slice(&answers.to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]); // no authority, no additional records
    reply.extend_from_slice(&query[HEADER..question.end]);
    reply
}

/// The answer for the host's own name: its A record is `address`; other types have none
/// (so the guest does not ask the world for a name only this network knows).
pub fn local_answer(query: &[u8], question: &Question, address: Ipv4Addr) -> Vec<u8> {
    let is_a = question.qtype == TYPE_A && question.qclass == CLASS_IN;
    let mut reply = reply_head(query, question, FLAGS_ANSWER, u16::from(is_a));
    if is_a {
        reply.extend_from_slice(&[0xc0, HEADER as u8]); // the name: a pointer to the question
        reply.extend_from_slice(&TYPE_A.to_be_bytes());
        reply.extend_from_slice(&CLASS_IN.to_be_bytes());
        reply.extend_from_slice(&60u32.to_be_bytes()); // TTL
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&address.octets());
    }
    reply
}

/// SERVFAIL for `query`: there is no resolver to forward it to.
pub fn server_failure(query: &[u8], question: &Question) -> Vec<u8> {
    reply_head(query, question, FLAGS_SERVFAIL, 0)
}

/// Whether the question is for the host's name.
pub fn is_host_name(question: &Question) -> bool {
    question.name == HOST_NAME || question.name == DOCKER_HOST_NAME
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of `qtype`, id 0x1234, recursion desired.
    pub fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn the_host_name_resolves_to_the_gateway() {
        let q = query("Host.Cairn.Internal", TYPE_A);
        let question = question(&q).expect("a question");
        assert!(is_host_name(&question));
        let reply = local_answer(&q, &question, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 1, "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[10, 0, 2, 2]);

        let docker = query("host.docker.internal", TYPE_A);
        assert!(is_host_name(&question_of(&docker)));
        assert!(!is_host_name(&question_of(&query("docker.internal", TYPE_A))));

        let aaaa = query(HOST_NAME, 28);
        let reply = local_answer(&aaaa, &question_of(&aaaa), Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(u16::from_be_bytes([reply[6], reply[7]]), 0, "no AAAA record");
    }

    fn question_of(q: &[u8]) -> Question {
        question(q).expect("a question")
    }

    #[test]
    fn nonsense_has_no_question() {
        assert_eq!(question(b"short"), None);
        let mut q = query("example.com", TYPE_A);
        q[12] = 0xc0; // a pointer where a label should be
        assert_eq!(question(&q), None);
        let mut q = query("example.com", TYPE_A);
        q.truncate(q.len() - 3);
        assert_eq!(question(&q), None);
        let mut q = query("example.com", TYPE_A);
        q[2] |= 0x80; // a response, not a query
        assert_eq!(question(&q), None);
    }
}
