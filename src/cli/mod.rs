//! Subcommands, one module each.

pub mod admin;
pub mod audit;
pub mod bench;
pub mod card;
pub mod demo;
pub mod device;
pub mod phone;
pub mod pos;
pub mod reader;
pub mod serve;
pub mod shop;
pub mod wallet;
