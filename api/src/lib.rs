//! The REST types shared by hutchd and hutch, in LXD's `/1.0` shapes, the response
//! envelope, and the tables of instance and server config keys. No I/O.

pub mod backup;
pub mod certificate;
pub mod cluster;
pub mod config;
pub mod image;
pub mod instance;
pub mod network;
pub mod operation;
pub mod profile;
pub mod project;
pub mod recover;
pub mod resources;
pub mod response;
pub mod schedule;
pub mod server;
pub mod server_config;
pub mod storage;
pub mod warning;

pub use response::{Response, ResponseType};
