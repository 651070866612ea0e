//! Scenario and property tests of the core working together.

mod lifecycle;
mod properties;
mod world;
