//! One fault entry (a timeline entry or a random choice) into a [`ScheduledFault`], and the
//! seeded random schedule.

use std::collections::BTreeMap;
use std::time::Duration;

use hastack_config::KeyPath;

use super::ctx::Ctx;
use super::schema::RawFault;
use crate::fault::kind::{DurationRule, Param, TargetKind};
use crate::fault::{FaultAction, FaultKind, NetFault, ProcessFault, ProxyFault, ScheduledFault};
use crate::netns::NetnsTopology;

/// Validate one fault entry (timeline or random choice) into a fault with `at` zero.
pub(super) fn fault_of(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    f: &RawFault,
    names: &BTreeMap<String, TargetKind>,
    netns: Option<&NetnsTopology>,
    weights: &BTreeMap<String, f64>,
) -> Option<ScheduledFault> {
    let Some(kind) = FaultKind::from_name(&f.fault) else {
        cx.err(
            &path.key("fault"),
            format!(
                "unknown fault {:?}; allowed: {}",
                f.fault,
                FaultKind::list(FaultKind::ALL)
            ),
        );
        return None;
    };
    // Parameters that belong to other kinds are errors, not silently ignored.
    for p in Param::ALL {
        if given(f, p) && !kind.params().contains(&p) {
            cx.err(
                &path.key(p.name()),
                format!("`{}` does not apply to fault `{kind}`", p.name()),
            );
        }
    }
    let duration = f.duration.map(|d| d.0);
    if duration.is_some_and(|d| d.is_zero()) {
        cx.err(
            &path.key("duration"),
            "duration must be more than 0 (leave it out for \"until the end\")",
        );
    }
    match (kind.duration(), duration) {
        (DurationRule::Required, None) => cx.err(
            path,
            format!("fault `{kind}` needs a duration (it is undone after it)"),
        ),
        (DurationRule::Forbidden, Some(_)) => cx.err(
            &path.key("duration"),
            format!("fault `{kind}` takes no duration: it stops and starts again at once (use `kill` or `term` with a duration for a longer outage)"),
        ),
        _ => {}
    }
    if !target_is(cx, path, f, kind, names, netns) {
        return None;
    }
    let action = action_of(cx, path, f, kind)?;
    if let FaultAction::Proxy(pf) = &action
        && let Err(e) = pf.validate()
    {
        cx.err(path, e);
    }
    let weight = f
        .weight
        .or_else(|| weights.get(kind.name()).copied())
        .unwrap_or(1.0);
    if !(weight.is_finite() && weight >= 0.0) {
        cx.err(&path.key("weight"), "weight must be 0 or more");
    }
    Some(ScheduledFault {
        id: 0,
        at: Duration::ZERO,
        target: f.target.clone(),
        action,
        duration,
        weight,
        subject: match &f.subject {
            Some(sub) => cx.expand(&path.key("subject"), sub)?,
            None => f.target.clone(),
        },
    })
}

/// Whether the entry sets parameter `p`.
fn given(f: &RawFault, p: Param) -> bool {
    match p {
        Param::Delay => f.delay.is_some(),
        Param::Jitter => f.jitter.is_some(),
        Param::Direction => f.direction.is_some(),
        Param::Rate => f.rate.is_some(),
        Param::Fraction => f.fraction.is_some(),
        Param::Peer => f.peer.is_some(),
        Param::OneWay => f.one_way.is_some(),
    }
}

/// Whether the entry's target is what `kind` acts on (errors say what is).
fn target_is(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    f: &RawFault,
    kind: FaultKind,
    names: &BTreeMap<String, TargetKind>,
    netns: Option<&NetnsTopology>,
) -> bool {
    let want = kind.target();
    if want == TargetKind::Host {
        let Some(t) = netns else {
            cx.err(
                &path.key("fault"),
                format!("fault `{kind}` acts on network namespaces: it needs a [chaos.netns] topology (root only)"),
            );
            return false;
        };
        if !t.knows(&f.target) {
            cx.err(
                &path.key("target"),
                format!(
                    "fault `{kind}` needs a host as target; `{}` is not one; hosts: {}",
                    f.target,
                    t.names()
                ),
            );
            return false;
        }
        return true;
    }
    let have = names.get(&f.target).copied();
    if have == Some(want) {
        return true;
    }
    let known: Vec<&str> = names
        .iter()
        .filter(|(_, k)| **k == want)
        .map(|(n, _)| n.as_str())
        .collect();
    cx.err(
        &path.key("target"),
        format!(
            "fault `{kind}` needs a {} as target; `{}` is {}; {}s: {}",
            want.name(),
            f.target,
            have.map_or("not defined".to_string(), |k| format!("a {}", k.name())),
            want.name(),
            if known.is_empty() {
                "(none)".to_string()
            } else {
                known.join(", ")
            }
        ),
    );
    false
}

/// The action of a validated entry: one arm per kind, no fall-through.
fn action_of(
    cx: &mut Ctx<'_>,
    path: &KeyPath,
    f: &RawFault,
    kind: FaultKind,
) -> Option<FaultAction> {
    let direction = f.direction.unwrap_or_default();
    let need = |cx: &mut Ctx<'_>, what: &str| {
        cx.err(path, format!("fault `{kind}` needs {what}"));
    };
    Some(match kind {
        FaultKind::Kill => FaultAction::Process(ProcessFault::Kill),
        FaultKind::Term => FaultAction::Process(ProcessFault::Term),
        FaultKind::Pause => FaultAction::Process(ProcessFault::Pause),
        FaultKind::Restart => FaultAction::Process(ProcessFault::Restart),
        FaultKind::Latency => {
            let Some(delay) = f.delay else {
                need(cx, "`delay` (e.g. \"200ms\")");
                return None;
            };
            FaultAction::Proxy(ProxyFault::Latency {
                delay,
                jitter: f.jitter.unwrap_or_default(),
                direction,
            })
        }
        FaultKind::Bandwidth => {
            let Some(rate) = f.rate else {
                need(cx, "`rate` in bytes per second (e.g. \"64KiB\")");
                return None;
            };
            FaultAction::Proxy(ProxyFault::Bandwidth { rate, direction })
        }
        FaultKind::Reset => FaultAction::Proxy(ProxyFault::Reset),
        FaultKind::Blackhole => FaultAction::Proxy(ProxyFault::Blackhole { direction }),
        FaultKind::Drop => {
            let Some(fraction) = f.fraction else {
                need(cx, "`fraction` (e.g. 0.3 for 30% of connections)");
                return None;
            };
            FaultAction::Proxy(ProxyFault::Drop { fraction })
        }
        FaultKind::Partition => {
            let Some(peer) = f.peer.clone() else {
                need(cx, "`peer` (the host on the other side)");
                return None;
            };
            if !cx.vars.netns().is_some_and(|t| t.knows(&peer)) {
                let hosts = cx
                    .vars
                    .netns()
                    .map(NetnsTopology::names)
                    .unwrap_or_default();
                cx.err(
                    &path.key("peer"),
                    format!("no host `{peer}`; hosts: {hosts}"),
                );
                return None;
            }
            if peer == f.target {
                cx.err(
                    &path.key("peer"),
                    "peer must be another host than the target",
                );
                return None;
            }
            FaultAction::Net(NetFault::Partition {
                from: f.target.clone(),
                to: peer,
                one_way: f.one_way.unwrap_or(false),
            })
        }
        FaultKind::LinkDown => FaultAction::Net(NetFault::LinkDown {
            host: f.target.clone(),
        }),
    })
}

/// Draw `count` faults from `choices` (relative chances) at times spread over
/// `[start, end)`: the window is cut into `count` equal slots and one time is drawn
/// uniformly inside each, so faults never bunch up. Pure function of the seed.
pub fn random_schedule(
    seed: u64,
    count: u32,
    start: Duration,
    end: Duration,
    choices: &[(f64, ScheduledFault)],
) -> Vec<ScheduledFault> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let total: f64 = choices.iter().map(|(c, _)| *c).sum();
    let slot = (end - start) / count.max(1);
    let mut out = Vec::new();
    for i in 0..count {
        let at = start + slot * i + slot.mul_f64(rng.f64());
        let mut pick = rng.f64() * total;
        let mut chosen = None;
        for (c, f) in choices {
            if pick < *c {
                chosen = Some(f);
                break;
            }
            pick -= c;
        }
        if let Some(f) = chosen.or_else(|| choices.last().map(|(_, f)| f)) {
            out.push(ScheduledFault { at, ..f.clone() });
        }
    }
    out
}
