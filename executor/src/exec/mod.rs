//! Running actions: preparation, staging, the sandbox helper, output
//! ingestion, the execution log and the engine that schedules it all.

pub mod action;
pub mod dirpool;
pub mod engine;
pub mod helper;
pub mod log;
pub mod outputs;
pub mod platform;
pub mod repro;
pub mod runner;
pub mod staging;
pub mod supervisor;
