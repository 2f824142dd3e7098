//! End-to-end tests of the `quantforge` binary.

mod util;

#[path = "inspect.rs"]
mod inspect;

#[path = "quantize.rs"]
mod quantize;
