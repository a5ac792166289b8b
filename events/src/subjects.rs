//! NATS subjects, JetStream names and headers, as pure string functions.
//!
//! Every process derives names from here, so a publisher and a consumer can
//! never disagree on where an origin's events live.

/// Prefix of event subjects: `canopy.ev.<origin>.<token>`.
pub const EVENT_PREFIX: &str = "canopy.ev";

/// Subject token of role events (`_` is reserved: no point starts with it).
pub const ROLE_TOKEN: &str = "_role";

/// Subject token of birth events.
pub const BIRTH_TOKEN: &str = "_birth";

/// Subject token of resource events (an HA member's resource going into or
/// out of service).
pub const RESOURCE_TOKEN: &str = "_resource";

/// Subject token of checkpoint events (the active member's signature over
/// the origin's chain head).
pub const CHECKPOINT_TOKEN: &str = "_checkpoint";

/// Subject token of command events (who asked for a write, a force or an
/// unforce, signed by the client, and what came of it).
pub const COMMAND_TOKEN: &str = "_command";

/// Header that makes JetStream drop a re-published event (value: [`msg_id`]).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Header that makes JetStream refuse an event unless the stream's last
/// sequence is `seq - 1`: stream sequence == origin seq, and a deposed
/// member's late publish is refused by storage.
pub const EXPECTED_LAST_SEQ_HEADER: &str = "Nats-Expected-Last-Sequence";

/// `canopy.ev.<origin>.<token>`; `token` is a point name or
/// [`ROLE_TOKEN`] / [`BIRTH_TOKEN`] / [`RESOURCE_TOKEN`] /
/// [`CHECKPOINT_TOKEN`] / [`COMMAND_TOKEN`].
pub fn event_subject(origin: &str, token: &str) -> String {
    format!("{EVENT_PREFIX}.{origin}.{token}")
}

/// Split an event subject into (origin, token): the origin is every token
/// between `canopy.ev.` and the last one. `None` if it is not an event
/// subject or a part is empty.
pub fn parse_event_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix(EVENT_PREFIX)?.strip_prefix('.')?;
    let (origin, token) = rest.rsplit_once('.')?;
    (valid_path(origin) && valid_token(token)).then_some((origin, token))
}

/// `canopy.cmd.<node>`: commands (request/reply) served by the node's
/// active member.
pub fn cmd_subject(node: &str) -> String {
    format!("canopy.cmd.{node}")
}

/// `canopy.state.<node>`: the node's materialised state, on request.
pub fn state_subject(node: &str) -> String {
    format!("canopy.state.{node}")
}

/// `canopy.query.<node>`: history and state-at queries over the node's
/// streams, served by `canopy query` workers in the queue group
/// [`QUERY_GROUP`].
pub fn query_subject(node: &str) -> String {
    format!("canopy.query.{node}")
}

/// The queue group of a node's query workers.
pub const QUERY_GROUP: &str = "canopy-query";

/// `canopy.member.<node>.<member>`: one member's own endpoint (health,
/// role), whichever role it has.
pub fn member_subject(node: &str, member: &str) -> String {
    format!("canopy.member.{node}.{member}")
}

/// `canopy.ctl.<node>.<member>`: operator control of a pair member's role
/// (switchover, maintenance), asked of that member.
pub fn control_subject(node: &str, member: &str) -> String {
    format!("canopy.ctl.{node}.{member}")
}

/// JetStream stream of one origin: `EV_` + origin with `.` replaced by `-`.
/// Names never contain `-`, so distinct origins get distinct streams.
pub fn stream_name(origin: &str) -> String {
    format!("EV_{}", origin.replace('.', "-"))
}

/// JetStream domain of a node: its path with `.` replaced by `-` (domains
/// may not contain dots).
pub fn domain(node: &str) -> String {
    node.replace('.', "-")
}

/// Subjects captured by an origin's stream: `canopy.ev.<origin>.*`. One
/// token, so the stream holds the origin's own points only, never a
/// child's (whose subjects have more tokens).
pub fn stream_subjects(origin: &str) -> String {
    format!("{EVENT_PREFIX}.{origin}.*")
}

/// Value of [`MSG_ID_HEADER`] for a sealed event:
/// `<origin>:<seq>:<first 8 bytes of its hash, hex>`.
///
/// Unique per sealed event, not per seq: JetStream answers a publish whose
/// id it has seen within the duplicate window with the *earlier* message's
/// sequence and `duplicate: true`, before it checks the expected last
/// sequence. With `<origin>:<seq>` alone, another member's event, or this
/// member's own event re-sealed with other bytes, at the same seq was
/// "confirmed" by the stream although the stream held different bytes, and
/// the chain forked behind it. With the hash, only the very same bytes
/// (a resend after a lost ack) share an id.
pub fn msg_id(origin: &str, seq: u64, hash: &[u8; 32]) -> String {
    let mut id = format!("{origin}:{seq}:");
    for b in &hash[..8] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// Prefix of replica subjects: `canopy.rp.<holder domain>.<origin>.<token>`.
pub const REPLICA_PREFIX: &str = "canopy.rp";

/// The subject a replica held by `holder` stores `origin`'s `token` under.
/// Replicas never capture `canopy.ev.…`: no two streams in the tree share a
/// subject, so a live publish is acked by exactly one stream.
pub fn replica_subject(holder: &str, origin: &str, token: &str) -> String {
    format!("{REPLICA_PREFIX}.{}.{origin}.{token}", domain(holder))
}

/// Every member and witness answers requests on this subject (no queue
/// group): one scatter-gather request lists the whole tree (`canopy status`).
pub const HELLO: &str = "canopy.hello";

/// A node, member or point name: one NATS token of `[a-z0-9_]+`.
pub fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A point name: a token not starting with `_` (reserved for system
/// subjects such as [`ROLE_TOKEN`]).
pub fn valid_point_name(s: &str) -> bool {
    valid_token(s) && !s.starts_with('_')
}

/// A node path: one or more tokens joined by `.` (`root.tunnel_a.plc1`).
pub fn valid_path(s: &str) -> bool {
    s.split('.').all(valid_token)
}

/// NATS wildcard match of a subject-like `name` against `pattern`: `*`
/// matches exactly one token, a final `>` one or more. A malformed pattern
/// (empty token, `>` not last) matches nothing.
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut pat = pattern.split('.').peekable();
    let mut toks = name.split('.');
    while let Some(p) = pat.next() {
        if p.is_empty() {
            return false;
        }
        if p == ">" {
            // `>` must be last and needs at least one token to swallow.
            return pat.peek().is_none() && toks.next().is_some_and(|t| !t.is_empty());
        }
        match toks.next() {
            Some(t) if !t.is_empty() && (p == "*" || p == t) => {}
            _ => return false,
        }
    }
    toks.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_subject_round_trip() {
        for (origin, token) in [
            ("root", "temp1"),
            ("root.south", "_role"),
            ("root.south", "_resource"),
            ("root.tunnel_a.plc1", "fan1_speed"),
        ] {
            let s = event_subject(origin, token);
            assert_eq!(parse_event_subject(&s), Some((origin, token)));
        }
        assert_eq!(
            event_subject("root.south", "temp1"),
            "canopy.ev.root.south.temp1"
        );
    }

    #[test]
    fn parse_rejects_non_event_subjects() {
        for s in [
            "canopy.cmd.root",
            "canopy.ev",
            "canopy.ev.",
            "canopy.ev.root",
            "canopy.ev.root.",
            "canopy.ev..temp1",
            "canopy.evx.root.temp1",
            "canopy.ev.root.*",
            "canopy.ev.Root.temp1",
        ] {
            assert_eq!(parse_event_subject(s), None, "{s}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(cmd_subject("root.south"), "canopy.cmd.root.south");
        assert_eq!(state_subject("root.south"), "canopy.state.root.south");
        assert_eq!(
            member_subject("root.south", "b"),
            "canopy.member.root.south.b"
        );
        assert_eq!(
            control_subject("root.south", "b"),
            "canopy.ctl.root.south.b"
        );
        assert_eq!(stream_name("root.tunnel_a.plc1"), "EV_root-tunnel_a-plc1");
        assert_eq!(stream_name("root"), "EV_root");
        assert_eq!(domain("root.south"), "root-south");
        assert_eq!(stream_subjects("root.south"), "canopy.ev.root.south.*");
        let mut h = [0u8; 32];
        h[0] = 0xab;
        h[7] = 0x01;
        h[8] = 0xff;
        assert_eq!(msg_id("root.south", 7, &h), "root.south:7:ab00000000000001");
        assert_eq!(
            replica_subject("root.south", "root.south.cell1", "t"),
            "canopy.rp.root-south.root.south.cell1.t"
        );
    }

    #[test]
    fn tokens_and_paths() {
        assert!(valid_token("fan1_speed"));
        assert!(valid_token("_role"));
        for bad in ["", "Fan", "a.b", "a-b", "a b", "*", ">", "é"] {
            assert!(!valid_token(bad), "{bad}");
        }
        assert!(valid_point_name("temp1"));
        assert!(!valid_point_name("_role"));
        for reserved in [
            ROLE_TOKEN,
            BIRTH_TOKEN,
            RESOURCE_TOKEN,
            CHECKPOINT_TOKEN,
            COMMAND_TOKEN,
        ] {
            assert!(valid_token(reserved) && !valid_point_name(reserved));
        }
        assert!(valid_path("root.tunnel_a.plc1"));
        for bad in ["", "root.", ".root", "root..a", "root.A"] {
            assert!(!valid_path(bad), "{bad}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(matches("root.south.>", "root.south.temp1"));
        assert!(matches("root.south.>", "root.south.plc1.temp1"));
        assert!(!matches("root.south.>", "root.south"));
        assert!(!matches("root.south.>", "root.southern.temp1"));
        assert!(matches("root.*.temp1", "root.south.temp1"));
        assert!(!matches("root.*.temp1", "root.south.plc1.temp1"));
        assert!(!matches("root.*.temp1", "root.temp1"));
        assert!(matches("root.south.temp1", "root.south.temp1"));
        assert!(!matches("root.south.temp1", "root.south.temp12"));
        assert!(!matches("root.south", "root.south.temp1"));
        assert!(matches(">", "root.x"));
        assert!(matches("*.*", "root.x"));
        // Malformed patterns match nothing.
        assert!(!matches("root.>.temp1", "root.south.temp1"));
        assert!(!matches("root..temp1", "root..temp1"));
        assert!(!matches("", ""));
    }
}
