//! The crate's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can stop a chaos run (expected per-request failures are not errors: they
/// are [`crate::record::Outcome`] values counted in the report).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The scenario file is invalid; the diagnostics carry file:line:column.
    #[error("{0}")]
    Config(#[from] hastack_config::Diagnostics),

    /// A namespace fault in a scenario that has no namespace topology.
    #[error(
        "fault `{fault}` on `{target}` needs a network-namespace topology: declare the hosts \
         in [chaos.netns] (root only) and give each process its `host`"
    )]
    NeedsTestbed {
        /// The fault kind.
        fault: String,
        /// Its target.
        target: String,
    },

    /// Namespace mode cannot run (not root, a tool missing) or a testbed command failed.
    #[error("{what}: {source}")]
    Netns {
        /// What was being done.
        what: String,
        /// The testbed's error (it names the missing privilege, tool or failed command).
        source: hastack_testbed::TestbedError,
    },

    /// The scenario needs a hastack subcommand this binary does not have.
    #[error(
        "the scenario needs `hastack {subcommand}`, which this hastack build ({exe}) does not \
         have yet"
    )]
    MissingSubcommand {
        /// The subcommand, e.g. `proxy`.
        subcommand: String,
        /// The binary that was asked.
        exe: String,
    },

    /// A process could not be started.
    #[error("cannot start process `{name}` ({command}): {source}")]
    Spawn {
        /// The process's scenario name.
        name: String,
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },

    /// A process did not become ready in time (or exited first).
    #[error("process `{name}` did not become ready: {reason}{log}")]
    NotReady {
        /// The process's scenario name.
        name: String,
        /// What happened.
        reason: String,
        /// The tail of its log, prefixed with a newline, or empty.
        log: String,
    },

    /// A socket could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Who wanted it.
        what: String,
        /// Why.
        source: std::io::Error,
    },

    /// A signal could not be delivered.
    #[error("cannot send {signal} to process `{name}` (pid {pid}): {reason}")]
    Signal {
        /// Process name.
        name: String,
        /// Its pid.
        pid: i32,
        /// The signal.
        signal: String,
        /// Why.
        reason: String,
    },

    /// A fault names a target that does not exist or cannot take that fault.
    #[error("fault `{fault}` cannot be applied to `{target}`: {reason}")]
    BadTarget {
        /// The fault kind.
        fault: String,
        /// The target.
        target: String,
        /// Why.
        reason: String,
    },

    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// Drawing the chart failed.
    #[error("cannot draw the chart {path}: {reason}")]
    Chart {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// Any other I/O failure, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },

    /// Two runs cannot be compared.
    #[error("cannot compare the runs: {0}")]
    Compare(String),
}

impl ChaosError {
    /// An [`ChaosError::Io`] with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ChaosError::Io {
            what: what.into(),
            source,
        }
    }
}
