//! Every integration test in one binary. Each file beside this one (and `sources/`) is a
//! module here: one binary links the library and the harness once, where one binary per file
//! linked them ~30 times and made most of a CI run's build time. `architecture.rs` checks that
//! no test file is left out of this list.

mod common;
mod daemon_support;
mod push_support;

mod architecture;
mod compress;
mod crash_loop;
mod credentials;
mod daemon_api;
mod daemon_cli;
mod daemon_events;
mod daemon_restart;
mod daemon_security;
mod daemon_systemd;
mod ecr;
mod fault_proxy;
mod fuzz_corpus;
mod harness;
mod hostile;
mod inspect;
mod logs;
mod push_credentials;
mod push_e2e;
mod push_ecr;
mod push_faults;
mod push_kill;
mod push_kill_states;
mod push_lifecycle;
mod push_limits;
mod push_more;
mod push_resume_event;
mod push_tags;
mod registry;
mod sources;
mod split_fixed;
mod split_models;
mod split_props;
