//! What the scenario tests share: the shipped scenario files, loaded as a run would.
#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::{Path, PathBuf};

use hastack_chaos::scenario::{self, LoadOptions, Scenario, Vars};
use hastack_config::Source;

/// `scenarios/NAME`.
pub fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(name)
}

/// `scenarios/NAME` loaded with the run directory `/run` and the binary `/bin/hastack`.
pub fn load(name: &str) -> Scenario {
    let path = path(name);
    let src = Source::load(&path).unwrap();
    let mut vars = Vars::new("/run".into(), path.clone(), PathBuf::from("/bin/hastack"));
    scenario::load(&src, &mut vars, LoadOptions::default())
        .unwrap_or_else(|d| panic!("{d}"))
        .0
}

/// The text of `scenarios/NAME`.
pub fn text(name: &str) -> String {
    std::fs::read_to_string(path(name)).unwrap()
}
