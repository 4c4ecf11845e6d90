//! The box file's line format, byte-compatible with @sap/cds `file-based-messaging`.
//!
//! A message line is `<topic> <json>`; @sap/cds matches it with `^\s*(\S+) ({.*)` and writes it as
//! `"\n" + topic + " " + JSON.stringify({data, headers})`.
//!
//! While one of our consumers processes a message, its line is rewritten in place as a *claim*:
//! `~claim/<host>/<pid>-<start>.<instance>.<seq>/<attempt>/<topic> <json>`, where `<start>` tells
//! this start of the process apart from an earlier one with the same pid (a restarted container gets
//! pid 1 again; see [`Owner::start`]). Claims without `-<start>` (written by older versions) parse
//! with `start` 0. To @sap/cds's consumers a claim is
//! a message on a topic nobody subscribes to, so they keep it; our consumers skip claims whose owner
//! is alive and take over the claims of a process that died. That is what makes the box
//! at-least-once across crashes and exactly-once between healthy processes.

use std::fmt::Write as _;

/// Prefix of a claimed line's first word.
pub const CLAIM_PREFIX: &str = "~claim/";

/// Who holds a claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Host name of the claiming process.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Which start of a process with that pid: its start time (clock ticks since boot, from
    /// `/proc/<pid>/stat`), or a random nonce where that cannot be read; 0 when unknown (a claim
    /// written by an older version).
    pub start: u64,
    /// The engine instance inside that process.
    pub instance: u64,
}

/// A claim on one message line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The owner.
    pub owner: Owner,
    /// Sequence number, unique per owner.
    pub seq: u64,
    /// Deliveries so far (1 on the first delivery).
    pub attempt: u32,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// Empty or only white space.
    Blank,
    /// An unclaimed message.
    Message {
        /// The topic.
        topic: &'a str,
        /// The JSON body, unparsed.
        json: &'a str,
    },
    /// A message claimed by some consumer.
    Claimed {
        /// The claim.
        claim: Claim,
        /// The original topic.
        topic: &'a str,
        /// The JSON body, unparsed.
        json: &'a str,
    },
    /// Anything else; moved aside by our consumers.
    Malformed(&'a str),
}

/// Parses one line (without its `\n`).
pub fn parse(raw: &str) -> Line<'_> {
    let s = raw.trim_start();
    if s.trim_end().is_empty() {
        return Line::Blank;
    }
    let Some(ws) = s.find(char::is_whitespace) else {
        return Line::Malformed(raw);
    };
    let (first, rest) = s.split_at(ws);
    let Some(json) = rest.strip_prefix(' ') else {
        return Line::Malformed(raw);
    };
    if !json.starts_with('{') {
        return Line::Malformed(raw);
    }
    if let Some(claim) = first.strip_prefix(CLAIM_PREFIX) {
        if let Some((claim, topic)) = parse_claim(claim) {
            return Line::Claimed { claim, topic, json };
        }
    }
    Line::Message { topic: first, json }
}

fn parse_claim(s: &str) -> Option<(Claim, &str)> {
    let mut parts = s.splitn(4, '/');
    let host = parts.next()?;
    let id = parts.next()?;
    let attempt = parts.next()?.parse().ok()?;
    let topic = parts.next()?;
    let mut ids = id.split('.');
    let first = ids.next()?;
    let (pid, start) = match first.split_once('-') {
        Some((pid, start)) => (pid.parse().ok()?, start.parse().ok()?),
        None => (first.parse().ok()?, 0),
    };
    let instance = ids.next()?.parse().ok()?;
    let seq = ids.next()?.parse().ok()?;
    if ids.next().is_some() || host.is_empty() || topic.is_empty() {
        return None;
    }
    Some((
        Claim {
            owner: Owner {
                host: host.to_string(),
                pid,
                start,
                instance,
            },
            seq,
            attempt,
        },
        topic,
    ))
}

/// Appends `"\n" + topic + " " + json` to `out` (the form @sap/cds writes).
pub fn write_message(out: &mut String, topic: &str, json: &str) {
    out.push('\n');
    out.push_str(topic);
    out.push(' ');
    out.push_str(json);
}

/// Appends a claimed line to `out`.
pub fn write_claimed(out: &mut String, claim: &Claim, topic: &str, json: &str) {
    let o = &claim.owner;
    let _ = write!(
        out,
        "\n{CLAIM_PREFIX}{}/{}-{}.{}.{}/{}/{topic} {json}",
        o.host, o.pid, o.start, o.instance, claim.seq, claim.attempt
    );
}

/// `true` when `topic` can be written as a box line (non-empty, no white space).
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            host: "h1".into(),
            pid: 42,
            start: 5150,
            instance: 7,
        }
    }

    #[test]
    fn parses_what_sap_cds_writes() {
        assert_eq!(
            parse(r#"my.topic {"data":{"a":1},"headers":{}}"#),
            Line::Message {
                topic: "my.topic",
                json: r#"{"data":{"a":1},"headers":{}}"#
            }
        );
        assert_eq!(
            parse(r#"  t {"data":1}"#),
            Line::Message {
                topic: "t",
                json: r#"{"data":1}"#
            }
        );
        assert_eq!(parse(""), Line::Blank);
        assert_eq!(parse("   "), Line::Blank);
    }

    #[test]
    fn rejects_what_sap_cds_would_not_match() {
        assert!(matches!(parse("justoneword"), Line::Malformed(_)));
        assert!(matches!(parse("t  {}"), Line::Malformed(_)));
        assert!(matches!(parse("t [1,2]"), Line::Malformed(_)));
        assert!(matches!(parse("t\t{}"), Line::Malformed(_)));
    }

    #[test]
    fn claim_round_trip() {
        let claim = Claim {
            owner: owner(),
            seq: 99,
            attempt: 2,
        };
        let mut out = String::new();
        write_claimed(&mut out, &claim, "a/b.c", r#"{"data":1}"#);
        assert_eq!(out, "\n~claim/h1/42-5150.7.99/2/a/b.c {\"data\":1}");
        assert_eq!(
            parse(&out[1..]),
            Line::Claimed {
                claim,
                topic: "a/b.c",
                json: r#"{"data":1}"#
            }
        );
    }

    #[test]
    fn a_claim_of_an_older_version_has_start_zero() {
        let Line::Claimed { claim, topic, .. } = parse(r#"~claim/h1/42.7.99/2/t {"a":1}"#) else {
            panic!("not a claim");
        };
        assert_eq!((claim.owner.pid, claim.owner.start, claim.seq), (42, 0, 99));
        assert_eq!(topic, "t");
    }

    #[test]
    fn a_broken_claim_is_just_a_message_on_an_odd_topic() {
        assert_eq!(
            parse(r#"~claim/h/x/1/t {"a":1}"#),
            Line::Message {
                topic: "~claim/h/x/1/t",
                json: r#"{"a":1}"#
            }
        );
    }

    #[test]
    fn message_form_matches_sap_cds() {
        let mut out = String::new();
        write_message(&mut out, "t", "{}");
        assert_eq!(out, "\nt {}");
        assert!(valid_topic("a.b/c"));
        assert!(!valid_topic("a b"));
        assert!(!valid_topic(""));
    }
}
