//! One integration-test binary (it links once); a module per area.

mod cli;
mod lifecycle;
mod ops;
mod support;
mod tokens;
