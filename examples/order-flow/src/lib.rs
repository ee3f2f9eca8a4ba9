//! The guides' e-commerce order flow on the Tidings toolkit, as a library
//! the `order-flow` command runs: the event model, the services, the order
//! service's HTTP front, the read model, the customers and the final check.

pub mod board;
pub mod check;
pub mod load;
pub mod model;
pub mod services;
pub mod shop;
