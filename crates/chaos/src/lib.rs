//! hastack's chaos harness: drive load, inject faults, and measure availability in nines.
//!
//! A run ([`run::run`]) takes a [`scenario::Scenario`] (from a TOML `[chaos]` section, or
//! built in code like [`demo::build`]), starts its topology (processes with readiness
//! checks, userspace [`fault::proxy::FaultProxy`]s), drives an open-loop load
//! ([`load`]), injects the fault schedule, and turns what the clients saw into a
//! [`report::Report`]: request-based availability with its confidence interval and the
//! nines the sample supports, the request-seconds each fault cost (every failed request
//! attributed to a fault or listed as unattributed), recovery, detection and repair times
//! (from the [`events`] feed), error budget, fault score, latency over time; rendered as
//! text ([`render`]), JSON and an SVG chart ([`chart`]).
//!
//! Module map:
//!
//! * [`record`]: bounded-memory recording of every request (10 ms buckets + latency
//!   histograms), keyed by intended send time.
//! * [`report`]: pure report math (attribution and per-fault costs in `report::incidents`,
//!   the statistics in `report::stats`); every formula is documented there and in
//!   `docs/chaos.md`.
//! * [`load`]: the open-loop generator and its [`load::Driver`] trait (HTTP, TCP; Redis/SQL
//!   plug in later).
//! * [`fault`]: the one list of fault kinds ([`fault::FaultKind`]), process faults, the
//!   fault proxy, and the [`fault::NetworkFaults`] boundary to namespace faults.
//! * [`netns`]: namespace mode (root): a scenario's hosts as network namespaces of a
//!   `hastack-testbed`, the load generator inside the client namespace, partitions and
//!   link-down through the testbed ([`netns::Lab`]).
//! * [`scenario`]: the `[chaos]` schema, placeholders, validation with located errors, and
//!   fault entries, one module each.
//! * [`control`]: the run-time control API (fault proxies, pushed events).
//! * [`demo`]: `hastack demo`, parameterised by a [`demo::FrontTier`]; every front tier is
//!   configured from one [`demo::FrontTuning`], so comparisons are like for like.
//!
//! **Architecture invariant**: this crate depends on `hastack-config`, `hastack-admin` and
//! the namespace lab `hastack-testbed` only, never on the components it measures (proxy,
//! vip, ...): front tiers plug in through [`demo::FrontTier`] and run as separate
//! processes, components talk to it through the event feed ([`events`]). So a broken
//! component can never hide its own failure from the harness.
//!
//! What it deliberately does not do: it does not parse or print to the terminal by itself
//! (the CLI does), it never sends traffic anywhere but the addresses a scenario names
//! (loopback, or the private /24 of its own namespaces), and it never touches the root
//! namespace's network configuration or firewall.

pub mod chart;
pub mod control;
pub mod demo;
pub mod error;
pub mod events;
pub mod fault;
pub mod load;
pub mod netns;
pub mod record;
pub mod render;
pub mod report;
pub mod run;
pub mod scenario;

pub use error::ChaosError;
pub use report::Report;
pub use run::{RunOptions, run};
pub use scenario::Scenario;
