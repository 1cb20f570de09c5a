//! `hastack check FILE...`: validate config files the way `haproxy -c` / `nginx -t` do.
//!
//! Every top-level section is handed to the component that owns it; unknown sections are
//! errors (a typo like `[prxy]` would otherwise be silently ignored). Exit status: 0 when
//! every file is valid (warnings allowed), 1 otherwise.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use hastack_config::{Diagnostics, KeyPath, Source};

/// Arguments of `hastack check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config files to validate.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print nothing on success.
    #[arg(long, short)]
    quiet: bool,
}

/// A component's validator: the section it owns and how to check it.
pub struct Component {
    /// Top-level section name.
    pub section: &'static str,
    /// Validate the section; on success, a one-line summary and any warnings.
    pub validate: fn(&Source) -> Result<(String, Diagnostics), Diagnostics>,
}

/// Every section hastack understands. Components add themselves here.
pub const COMPONENTS: &[Component] = &[
    Component {
        section: hastack_proxy::config::SECTION,
        validate: |src| {
            hastack_proxy::config::load(src)
                .map(|(spec, warnings)| (hastack_proxy::config::summary(&spec), warnings))
        },
    },
    Component {
        section: "vip",
        validate: |src| hastack_vip::load(src).map(|(c, w)| (hastack_vip::summary(&c), w)),
    },
    Component {
        section: hastack_cache::config::SECTION,
        validate: hastack_cache::config::check,
    },
    Component {
        section: hastack_chaos::scenario::SECTION,
        validate: hastack_chaos::scenario::check,
    },
    Component {
        section: hastack_coord::server::config::SECTION,
        validate: |src| {
            hastack_coord::server::config::load(src)
                .map(|(c, w)| (hastack_coord::server::config::summary(&c), w))
        },
    },
];

/// Validate one parsed source: every section present, plus unknown-section errors.
pub fn validate(src: &Source) -> Result<(Vec<String>, Diagnostics), Diagnostics> {
    let mut errors = Diagnostics::new();
    let mut warnings = Diagnostics::new();
    let mut summaries = Vec::new();
    for (name, _) in src.sections() {
        if !COMPONENTS.iter().any(|c| c.section == name) {
            let known: Vec<&str> = COMPONENTS.iter().map(|c| c.section).collect();
            errors.error(
                src,
                &KeyPath::root().key(&name),
                format!(
                    "unknown section [{name}]; hastack understands: {}",
                    if known.is_empty() {
                        "(none yet)".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }
    for c in COMPONENTS {
        if !src.has_section(c.section) {
            continue;
        }
        match (c.validate)(src) {
            Ok((summary, w)) => {
                summaries.push(summary);
                warnings.extend(w);
            }
            Err(e) => errors.extend(e),
        }
    }
    if src.sections().is_empty() {
        errors.error(
            src,
            &KeyPath::root(),
            "the file has no sections: nothing to run",
        );
    }
    if errors.has_errors() {
        errors.extend(warnings);
        errors.sort();
        Err(errors)
    } else {
        Ok((summaries, warnings))
    }
}

#[allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "check reports to the terminal"
)]
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut ok = true;
    let stdout = std::io::stdout();
    for file in &args.files {
        let result = Source::load(file).and_then(|src| validate(&src));
        match result {
            Ok((summaries, warnings)) => {
                if !warnings.is_empty() {
                    eprintln!("{warnings}");
                }
                if !args.quiet {
                    let mut out = stdout.lock();
                    let _ = writeln!(out, "{}: configuration is valid", file.display());
                    for s in summaries {
                        let _ = writeln!(out, "  {s}");
                    }
                }
            }
            Err(diags) => {
                ok = false;
                eprintln!("{diags}");
                eprintln!(
                    "{}: {} error(s), {} warning(s): configuration is NOT valid",
                    file.display(),
                    diags.error_count(),
                    diags.warning_count()
                );
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
