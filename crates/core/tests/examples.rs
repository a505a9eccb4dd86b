//! Every configuration file under `examples/` must load and validate, so the files
//! the documentation points to never drift from the code.

// Helpers outside #[test] functions may panic too: this whole file is a test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use tidepool_core::config::{PoolMode, StoredPassword};
use tidepool_core::Config;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_validates() {
    let files = example_files();
    assert!(
        files.len() >= 2,
        "expected at least minimal.toml and tidepool.toml, found {files:?}"
    );
    for path in files {
        if let Err(e) = Config::load(&path) {
            panic!("{} does not validate: {e}", path.display());
        }
    }
}

#[test]
fn full_example_shows_both_modes_and_every_password_form() {
    let config = Config::load(&examples_dir().join("tidepool.toml")).unwrap();
    assert_eq!(config.tenants.len(), 2);
    let users: Vec<_> = config.tenants.iter().flat_map(|t| t.users.iter()).collect();
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        assert!(users.iter().any(|u| u.mode == mode), "no {mode:?} user");
    }
    let kind = |p: &StoredPassword| match p {
        StoredPassword::None => "none",
        StoredPassword::Plain { .. } => "plain",
        StoredPassword::Scram(_) => "scram",
        StoredPassword::Md5(_) => "md5",
    };
    for wanted in ["plain", "scram", "md5"] {
        assert!(
            users.iter().any(|u| kind(&u.password) == wanted),
            "no {wanted} password"
        );
    }
}
