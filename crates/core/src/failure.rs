//! Failures as values: who is to blame when an exchange with an upstream fails, whether
//! sending the request again is safe, and what to do next.
//!
//! Modelled on pingora-error's `Error { etype, esource, retry }` and its
//! `RetryType::ReusedOnly`: blame and retryability are data attached to the failure where it
//! happens, and one pure function ([`decide`]) turns them into the next step. Every data
//! plane that forwards requests over pooled connections (the proxy, the service client)
//! uses this vocabulary, so they follow the same rules; each keeps its own list of failure
//! *kinds* and maps a kind to a [`Blame`] and a [`Retry`].
//!
//! The two facts that matter most are how far the exchange got and whether the connection
//! came from an idle pool ([`Progress::transport`]):
//!
//! * **Nothing written**: the upstream never saw the request; any request may be sent
//!   again, whatever its method, and a streamed body is still whole.
//! * **Written, no response byte**: the upstream may have processed it; only an idempotent
//!   request whose body can be sent again unchanged may be repeated (RFC 9110 9.2.2).
//! * **A reused connection failing before any response byte** is most likely the keep-alive
//!   race (the upstream closed the idle connection as the request went out): nobody is to
//!   blame, and a request that may be repeated is redone at once on a fresh connection to
//!   the same upstream, without spending an attempt or retry budget.
//!
//! Pure: no IO, no clock; the retry budget is asked through a closure only when a retry
//! would otherwise go ahead, so a refused retry never spends it.

use serde::Serialize;

/// Who caused a failure. Decides who is penalised: only [`Blame::Upstream`] counts against
/// an upstream's health, breaker and outlier statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// The client: its request or body was bad, too large, or it went away.
    Client,
    /// The upstream: refused, reset, timed out, answered garbage or a 5xx.
    Upstream,
    /// This process: out of file descriptors, ports or memory. Nobody upstream is at fault
    /// and another upstream would fare no better.
    Local,
    /// Nobody: a pooled connection the upstream had already closed (the keep-alive race).
    Nobody,
}

impl Blame {
    /// Every value.
    pub const ALL: [Blame; 4] = [Blame::Client, Blame::Upstream, Blame::Local, Blame::Nobody];

    /// Lower-case name, as used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Client => "client",
            Blame::Upstream => "upstream",
            Blame::Local => "local",
            Blame::Nobody => "nobody",
        }
    }
}

/// Whether sending the request again is safe, as far as the failure alone can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Never: the client's own fault, or an answer that is final (a status not meant to be
    /// retried).
    Never,
    /// The upstream never got the request (nothing was written): safe for any request.
    Unsent,
    /// The upstream may have processed the request: safe only for a resendable request
    /// (idempotent method, body kept for a resend).
    Sent,
}

impl Retry {
    /// Every value.
    pub const ALL: [Retry; 3] = [Retry::Never, Retry::Unsent, Retry::Sent];

    /// Whether a request that is `resendable` (idempotent with a body that can be sent again
    /// unchanged) may be sent again after this failure.
    pub fn allows(self, resendable: bool) -> bool {
        match self {
            Retry::Never => false,
            Retry::Unsent => true,
            Retry::Sent => resendable,
        }
    }
}

/// How far one exchange on one connection got when its transport failed (closed, reset, a
/// socket error, a timeout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The connection came from the idle pool (it carried an earlier exchange).
    pub reused: bool,
    /// At least one request byte was handed to the kernel.
    pub written: bool,
    /// At least one response byte arrived.
    pub answered: bool,
}

impl Progress {
    /// Blame and retry safety of a transport failure at this point of the exchange.
    ///
    /// | reused | written | answered | blame | retry |
    /// |---|---|---|---|---|
    /// | any | any | yes | upstream | sent |
    /// | yes | no | no | nobody | unsent |
    /// | yes | yes | no | nobody | sent |
    /// | no | no | no | upstream | unsent |
    /// | no | yes | no | upstream | sent |
    pub fn transport(self) -> (Blame, Retry) {
        let retry = if self.written || self.answered {
            Retry::Sent
        } else {
            Retry::Unsent
        };
        let blame = if self.reused && !self.answered {
            Blame::Nobody
        } else {
            Blame::Upstream
        };
        (blame, retry)
    }
}

/// What to do after a failed try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Send again to the same upstream on a fresh connection: free (no attempt, no budget).
    Redo,
    /// Send to another upstream: one more attempt, one unit of retry budget (already spent
    /// when this is returned).
    Retry,
    /// Give up: the client gets this failure.
    Fail,
}

/// Where a request stands when one of its tries failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tries {
    /// Tries that counted so far (redos excluded), the failed one included.
    pub attempt: u32,
    /// Most tries allowed (the first included).
    pub attempts: u32,
    /// Free redos left for this request.
    pub redos_left: u32,
    /// Whether the request may be sent again once written: an idempotent method with a
    /// body kept for a resend.
    pub resendable: bool,
    /// Whether the request's deadline still leaves time for another try.
    pub time_left: bool,
}

/// The retry rules, in order:
///
/// 1. No time left, or [`Retry::allows`] says no: fail.
/// 2. Nobody to blame (a stale pooled connection) with a redo left: redo on a fresh
///    connection to the same upstream, free.
/// 3. The client's or our own fault: fail (another upstream would not help).
/// 4. Attempts left and the budget grants one (`budget` is called only here): retry on
///    another upstream. Otherwise fail.
pub fn decide(blame: Blame, retry: Retry, t: &Tries, budget: impl FnOnce() -> bool) -> Next {
    if !t.time_left || !retry.allows(t.resendable) {
        return Next::Fail;
    }
    match blame {
        Blame::Nobody if t.redos_left > 0 => return Next::Redo,
        Blame::Client | Blame::Local => return Next::Fail,
        Blame::Nobody | Blame::Upstream => {}
    }
    if t.attempt < t.attempts && budget() {
        Next::Retry
    } else {
        Next::Fail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> impl Iterator<Item = Progress> {
        (0..8u8).map(|b| Progress {
            reused: b & 1 != 0,
            written: b & 2 != 0,
            answered: b & 4 != 0,
        })
    }

    #[test]
    fn transport_failures_follow_the_table() {
        for p in progress() {
            let expected = match (p.reused, p.written, p.answered) {
                (_, _, true) => (Blame::Upstream, Retry::Sent),
                (true, false, false) => (Blame::Nobody, Retry::Unsent),
                (true, true, false) => (Blame::Nobody, Retry::Sent),
                (false, false, false) => (Blame::Upstream, Retry::Unsent),
                (false, true, false) => (Blame::Upstream, Retry::Sent),
            };
            assert_eq!(p.transport(), expected, "{p:?}");
        }
    }

    #[test]
    fn only_unsent_failures_allow_any_request() {
        assert!(!Retry::Never.allows(true) && !Retry::Never.allows(false));
        assert!(Retry::Unsent.allows(true) && Retry::Unsent.allows(false));
        assert!(Retry::Sent.allows(true) && !Retry::Sent.allows(false));
    }

    /// Every blame x retry x attempts left x redo left x resendable x time x budget.
    #[test]
    fn decide_exhaustively() {
        for blame in Blame::ALL {
            for retry in Retry::ALL {
                for bits in 0..32u8 {
                    let t = Tries {
                        attempt: 1,
                        attempts: if bits & 1 != 0 { 3 } else { 1 },
                        redos_left: u32::from(bits & 2 != 0),
                        resendable: bits & 4 != 0,
                        time_left: bits & 8 != 0,
                    };
                    let budget = bits & 16 != 0;
                    let mut asked = false;
                    let next = decide(blame, retry, &t, || {
                        asked = true;
                        budget
                    });
                    let allowed = match retry {
                        Retry::Never => false,
                        Retry::Unsent => true,
                        Retry::Sent => t.resendable,
                    };
                    let attempts_left = t.attempt < t.attempts;
                    let expected = if !t.time_left || !allowed {
                        Next::Fail
                    } else {
                        match blame {
                            Blame::Nobody if t.redos_left > 0 => Next::Redo,
                            Blame::Client | Blame::Local => Next::Fail,
                            _ if attempts_left && budget => Next::Retry,
                            _ => Next::Fail,
                        }
                    };
                    assert_eq!(next, expected, "{blame:?} {retry:?} {t:?} budget={budget}");
                    // The budget is spent only for a retry that would otherwise happen.
                    let should_ask = t.time_left
                        && allowed
                        && matches!(blame, Blame::Upstream | Blame::Nobody)
                        && !(blame == Blame::Nobody && t.redos_left > 0)
                        && attempts_left;
                    assert_eq!(asked, should_ask, "{blame:?} {retry:?} {t:?}");
                }
            }
        }
    }

    #[test]
    fn the_keep_alive_race_is_free_and_a_fresh_failure_is_not() {
        let t = Tries {
            attempt: 1,
            attempts: 1,
            redos_left: 2,
            resendable: true,
            time_left: true,
        };
        let race = Progress {
            reused: true,
            written: true,
            answered: false,
        };
        let (b, r) = race.transport();
        // No attempt left and no budget: still redone.
        assert_eq!(decide(b, r, &t, || false), Next::Redo);
        let fresh = Progress {
            reused: false,
            ..race
        };
        let (b, r) = fresh.transport();
        assert_eq!(decide(b, r, &t, || true), Next::Fail);
        // A written request that is not resendable (a POST) is never repeated, reused or not.
        let post = Tries {
            resendable: false,
            ..t
        };
        let (b, r) = race.transport();
        assert_eq!(decide(b, r, &post, || true), Next::Fail);
        // Nothing written on a stale connection: any request is redone.
        let unsent = Progress {
            written: false,
            ..race
        };
        let (b, r) = unsent.transport();
        assert_eq!(decide(b, r, &post, || false), Next::Redo);
    }
}
