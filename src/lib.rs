//! The `sitelog` package: the CLI binary (`src/main.rs`, `src/cli/`) and the pieces that
//! integration tests and benches share with it. `stack` runs the real local services;
//! `clock` is the one place that says what time it is (`SITELOG_NOW` for tests and replays).

pub mod clock;
pub mod console;
pub mod sample;
pub mod stack;
