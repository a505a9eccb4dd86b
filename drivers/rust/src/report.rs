//! Prints one line per check and remembers whether any failed.

use std::fmt::Display;

#[derive(Default)]
pub struct Report {
    failed: usize,
}

impl Report {
    /// Records the outcome of the check `name`.
    pub fn check<E: Display>(&mut self, name: &str, outcome: Result<(), E>) {
        match outcome {
            Ok(()) => println!("ok   {name}"),
            Err(error) => {
                self.failed += 1;
                println!("FAIL {name}: {error}");
            }
        }
    }

    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed > 0)
    }
}
