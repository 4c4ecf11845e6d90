//! Keeps a broker's Nagle algorithm from stalling the last PUBACKs of a burst.
//!
//! A broker with Nagle on (Mosquitto's default, `set_tcp_nodelay false`) sends one small segment and
//! holds the next ones until the peer has acknowledged it on the TCP level. A client that has
//! published a burst (a bulk emit) and now only waits for its PUBACKs sends nothing, so its kernel
//! delays that TCP ACK (40 ms on Linux): each bulk emit then waited ≈ 40 ms for its last PUBACKs
//! (measured: 2.7k msgs/s for `emitMany` against such a Mosquitto, 12.3k against one with
//! `set_tcp_nodelay true`). rumqttc gives no access to the socket (no `TCP_QUICKACK`), so the
//! connection writes an MQTT PINGREQ instead, which carries the ACK at once.
//!
//! A PINGREQ goes out only while publishes await their PUBACK and nothing else is about to be
//! written, after a segment of the broker arrived: one with a PUBACK, or a PINGRESP (the broker may
//! hold PUBACKs behind it), and only when we wrote nothing since: any packet we write carries our
//! TCP ACK for what arrived before it. (Without that last condition every emit made one at 1 in
//! flight: the PUBACK of one emit arrived, the next emit's PUBLISH went out and then waited for its
//! PUBACK, and a PINGREQ followed it, doubling the broker's work per message.)
//!
//! A PINGRESP after which no PUBACK came leads to no second PINGREQ, so a broker that is slow to
//! acknowledge gets at most two PINGREQs per segment of PUBACKs it sends, never a stream of them.
//! The PINGREQ is written past rumqttc's keep-alive state (a PINGRESP is always allowed).

/// What the connection loop knows when it decides whether to nudge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Situation {
    /// Publishes await their PUBACK.
    pub awaiting_acks: bool,
    /// Nothing else is about to be written (no request queued, no event left to handle): the
    /// next packet we write would otherwise come later.
    pub idle: bool,
}

/// The nudge state of one connection.
#[derive(Debug, Default)]
pub(super) struct Nudge {
    /// A segment of the broker arrived that may need our TCP ACK before the broker sends more.
    received: bool,
    /// A PINGRESP answered our last PINGREQ and no PUBACK came since.
    answered_without_progress: bool,
}

impl Nudge {
    /// A PUBACK arrived.
    pub fn puback(&mut self) {
        self.received = true;
        self.answered_without_progress = false;
    }

    /// We wrote a packet: it carried our TCP ACK for everything that arrived before it.
    pub fn wrote(&mut self) {
        self.received = false;
    }

    /// A PINGRESP arrived (ours or one of rumqttc's keep-alive).
    pub fn pingresp(&mut self) {
        if !self.answered_without_progress {
            self.received = true;
            self.answered_without_progress = true;
        }
    }

    /// The connection was lost or made anew.
    pub fn reset(&mut self) {
        *self = Nudge::default();
    }

    /// Whether to write a PINGREQ now; when it says yes, it counts the PINGREQ as written.
    pub fn due(&mut self, now: Situation) -> bool {
        if !(self.received && now.awaiting_acks && now.idle) {
            return false;
        }
        self.received = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITING: Situation = Situation {
        awaiting_acks: true,
        idle: true,
    };

    #[test]
    fn a_segment_of_pubacks_while_others_are_awaited_and_nothing_is_written_nudges_once() {
        let mut n = Nudge::default();
        assert!(!n.due(WAITING), "nothing arrived: nothing to acknowledge");
        n.puback();
        n.puback();
        assert!(n.due(WAITING), "one PINGREQ for what arrived together");
        assert!(!n.due(WAITING));
    }

    #[test]
    fn a_pingresp_nudges_once_until_a_puback_comes_again() {
        let mut n = Nudge::default();
        n.puback();
        assert!(n.due(WAITING));
        n.pingresp();
        assert!(
            n.due(WAITING),
            "the broker may hold PUBACKs behind its PINGRESP"
        );
        n.pingresp();
        assert!(
            !n.due(WAITING),
            "no PUBACK since: no stream of PINGREQs to a slow broker"
        );
        n.puback();
        assert!(n.due(WAITING));
        n.pingresp();
        assert!(n.due(WAITING));
    }

    #[test]
    fn no_nudge_while_something_else_is_written_or_nothing_is_awaited() {
        let mut n = Nudge::default();
        n.puback();
        let busy = Situation {
            idle: false,
            ..WAITING
        };
        assert!(!n.due(busy));
        let done = Situation {
            awaiting_acks: false,
            ..WAITING
        };
        assert!(!n.due(done));
        assert!(n.due(WAITING), "the PUBACK still counts");
    }

    #[test]
    fn a_packet_written_after_the_pubacks_carries_the_ack_so_no_nudge() {
        let mut n = Nudge::default();
        n.puback();
        n.wrote();
        assert!(
            !n.due(WAITING),
            "the next PUBLISH already acknowledged the segment"
        );
        n.puback();
        assert!(n.due(WAITING), "a PUBACK after the write counts again");
    }

    #[test]
    fn a_lost_connection_forgets_what_arrived() {
        let mut n = Nudge::default();
        n.puback();
        n.reset();
        assert!(!n.due(WAITING));
    }
}
