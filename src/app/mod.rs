//! The application around the service: the command line, the settings, start-up
//! (the one place that sees every part and picks every backend) and reload.

pub mod cli;
pub mod reload;
pub mod settings;
pub mod startup;
