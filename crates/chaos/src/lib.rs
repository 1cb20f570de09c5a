//! hastack's chaos harness: drive load, inject faults, and measure availability in nines.
//!
//! A run ([`run::run`]) takes a [`scenario::Scenario`] (from a TOML `[chaos]` section, or
//! built in code like [`demo::build`]), starts its topology (processes with readiness
//! checks, userspace [`fault::proxy::FaultProxy`]s), drives an open-loop load
//! ([`load`]), injects the fault schedule, and turns what the clients saw into a
//! [`report::Report`]: request-based availability and nines, per-fault downtime split
//! into detection and repair (from the [`events`] feed), failover percentiles, error
//! budget, fault score, a yearly projection, latency over time; rendered as text
//! ([`render`]), JSON and an SVG chart ([`chart`]).
//!
//! Module map:
//!
//! * [`record`]: bounded-memory recording of every request (10 ms buckets + latency
//!   histograms), keyed by intended send time.
//! * [`report`]: pure report math; every formula is documented there and in `docs/chaos.md`.
//! * [`load`]: the open-loop generator and its [`load::Driver`] trait (HTTP, TCP; Redis/SQL
//!   plug in later).
//! * [`fault`]: process faults, the fault proxy, and the [`fault::NetworkFaults`] boundary
//!   to namespace faults (refused by [`fault::NoTestbed`] until `hastack-testbed` lands).
//! * [`scenario`]: the `[chaos]` schema and its validation with located errors.
//! * [`control`]: the run-time control API (fault proxies, pushed events).
//! * [`demo`]: `hastack demo`, parameterised by a [`demo::FrontTier`].
//!
//! **Architecture invariant**: this crate depends on `hastack-config` and `hastack-admin`
//! only, never on the components it measures (proxy, vip, ...): front tiers plug in through
//! [`demo::FrontTier`], namespace faults through [`fault::NetworkFaults`], components talk
//! to it through the event feed ([`events`]). So a broken component can never hide its own
//! failure from the harness.
//!
//! What it deliberately does not do: it does not parse or print to the terminal by itself
//! (the CLI does), it never sends traffic anywhere but the addresses a scenario names
//! (loopback in every shipped scenario), and it does not implement namespace faults.

pub mod chart;
pub mod control;
pub mod demo;
pub mod error;
pub mod events;
pub mod fault;
pub mod load;
pub mod record;
pub mod render;
pub mod report;
pub mod run;
pub mod scenario;

pub use error::ChaosError;
pub use report::Report;
pub use run::{RunOptions, run};
pub use scenario::Scenario;
