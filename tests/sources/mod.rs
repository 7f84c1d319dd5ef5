//! Image sources end to end: sample images written by `hoist_testkit::sample`, converted by real tools
//! (skopeo, tar), planned, and streamed with verification. Then every kind of bad input.

mod bad_input;
mod engine;
mod engine_cli;
pub mod helpers;
mod kinds;
mod limits;
mod outside;
mod platforms;
mod props;
