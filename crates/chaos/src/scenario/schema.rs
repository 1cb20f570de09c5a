//! The `[chaos]` schema: serde types that mirror the file, key by key, with their defaults.
//!
//! Nothing here checks meaning: [`super::validate`] turns these into a runtime
//! [`super::Scenario`] and locates every error. Unknown keys are errors (`deny_unknown_fields`).

use std::collections::BTreeMap;

use hastack_config::{ByteSize, Dur};
use serde::Deserialize;

use crate::fault::Direction;
use crate::report::{DEFAULT_SETTLE, RestoreRule};

fn d_seed() -> u64 {
    1
}
pub(super) fn d_protocol() -> String {
    "http".into()
}
pub(super) fn d_method() -> String {
    "GET".into()
}
pub(super) fn d_path() -> String {
    "/".into()
}
pub(super) fn d_timeout() -> Dur {
    Dur::secs(2)
}
pub(super) fn d_connect_timeout() -> Dur {
    Dur::secs(1)
}
pub(super) fn d_max_in_flight() -> usize {
    10_000
}
pub(super) fn d_availability() -> f64 {
    99.9
}
pub(super) fn d_latency() -> Dur {
    Dur::secs(1)
}
pub(super) fn d_restore_window() -> Dur {
    Dur(RestoreRule::default().window)
}
pub(super) fn d_restore_ratio() -> f64 {
    RestoreRule::default().ratio
}
pub(super) fn d_settle() -> Dur {
    Dur(DEFAULT_SETTLE)
}
pub(super) fn d_ready_timeout() -> Dur {
    Dur::secs(10)
}
pub(super) fn d_stop_grace() -> Dur {
    Dur::secs(2)
}
pub(super) fn d_interval() -> Dur {
    Dur::ms(100)
}
pub(super) fn d_name_field() -> String {
    "name".into()
}
pub(super) fn d_state_field() -> String {
    "state".into()
}
pub(super) fn d_down_states() -> Vec<String> {
    vec!["down".into()]
}

/// `[chaos]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChaos {
    pub(super) name: Option<String>,
    pub(super) description: Option<String>,
    pub(super) duration: Dur,
    #[serde(default = "d_seed")]
    pub(super) seed: u64,
    #[serde(default)]
    pub(super) requires: Vec<String>,
    pub(super) load: RawLoad,
    #[serde(default)]
    pub(super) slo: Option<RawSlo>,
    #[serde(default)]
    pub(super) report: Option<RawReport>,
    #[serde(default)]
    pub(super) weights: BTreeMap<String, f64>,
    #[serde(default)]
    pub(super) process: Vec<RawProcess>,
    #[serde(default)]
    pub(super) fault_proxy: Vec<RawFaultProxy>,
    #[serde(default)]
    pub(super) file: Vec<RawFile>,
    #[serde(default)]
    pub(super) timeline: Vec<RawFault>,
    pub(super) random: Option<RawRandom>,
    #[serde(default)]
    pub(super) events: Vec<RawEvents>,
    pub(super) control: Option<RawControl>,
    pub(super) netns: Option<RawNetns>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetns {
    pub(super) hosts: Vec<String>,
    pub(super) subnet: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoad {
    #[serde(default = "d_protocol")]
    pub(super) protocol: String,
    pub(super) targets: Vec<String>,
    pub(super) rate: f64,
    #[serde(default = "d_method")]
    pub(super) method: String,
    #[serde(default = "d_path")]
    pub(super) path: String,
    pub(super) host: Option<String>,
    #[serde(default = "d_timeout")]
    pub(super) timeout: Dur,
    #[serde(default = "d_connect_timeout")]
    pub(super) connect_timeout: Dur,
    #[serde(default = "d_max_in_flight")]
    pub(super) max_in_flight: usize,
    pub(super) send: Option<String>,
    pub(super) expect_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlo {
    #[serde(default = "d_availability")]
    pub(super) availability: f64,
    #[serde(default = "d_latency")]
    pub(super) latency: Dur,
    /// No longer used (the yearly projection is gone); accepted with a warning.
    #[serde(default)]
    pub(super) incidents_per_year: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReport {
    #[serde(default = "d_restore_window")]
    pub(super) restore_window: Dur,
    #[serde(default = "d_restore_ratio")]
    pub(super) restore_ratio: f64,
    #[serde(default = "d_settle")]
    pub(super) settle: Dur,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReady {
    pub(super) tcp: Option<String>,
    pub(super) http: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    pub(super) name: String,
    pub(super) command: String,
    #[serde(default)]
    pub(super) args: Vec<String>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    pub(super) ready: Option<RawReady>,
    #[serde(default = "d_ready_timeout")]
    pub(super) ready_timeout: Dur,
    #[serde(default = "d_stop_grace")]
    pub(super) stop_grace: Dur,
    pub(super) host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFaultProxy {
    pub(super) name: String,
    pub(super) listen: String,
    pub(super) upstream: String,
    #[serde(default = "d_connect_timeout")]
    pub(super) connect_timeout: Dur,
    #[serde(default = "d_true")]
    pub(super) mirror_refusal: bool,
    pub(super) host: Option<String>,
}

pub(super) fn d_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) path: String,
    pub(super) content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFault {
    pub(super) at: Option<Dur>,
    pub(super) target: String,
    pub(super) fault: String,
    pub(super) duration: Option<Dur>,
    pub(super) delay: Option<Dur>,
    pub(super) jitter: Option<Dur>,
    pub(super) direction: Option<Direction>,
    pub(super) rate: Option<ByteSize>,
    pub(super) fraction: Option<f64>,
    pub(super) peer: Option<String>,
    pub(super) one_way: Option<bool>,
    pub(super) weight: Option<f64>,
    pub(super) subject: Option<String>,
    pub(super) chance: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRandom {
    pub(super) count: u32,
    pub(super) start: Option<Dur>,
    pub(super) end: Option<Dur>,
    pub(super) choices: Vec<RawFault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvents {
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) url: String,
    #[serde(default = "d_interval")]
    pub(super) interval: Dur,
    pub(super) source: Option<String>,
    pub(super) members: Option<String>,
    #[serde(default = "d_name_field")]
    pub(super) name_field: String,
    #[serde(default = "d_state_field")]
    pub(super) state_field: String,
    #[serde(default = "d_down_states")]
    pub(super) down_states: Vec<String>,
    pub(super) host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    pub(super) listen: String,
}
