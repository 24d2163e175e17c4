//! The `sitelog` package: the CLI binary (`src/main.rs`, `src/cli/`) and the pieces that
//! integration tests and benches share with it. `stack` runs the real local services.

pub mod sample;
pub mod stack;
