//! The commands behind the binary's subcommands that work without a cluster: argument types
//! (clap), the work, and the rendering. `main.rs` only parses, prints and sets the exit code.

pub mod members;
pub mod report;
pub mod sarif;
pub mod simulate;
pub mod validate;

#[cfg(test)]
mod remedies;
