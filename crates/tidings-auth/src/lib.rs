//! Authentication and permissions, one implementation for every front end.
//!
//! - [`scram`]: SCRAM-SHA-256 and SCRAM-SHA-512, the server's side, with
//!   credentials that keep no password.
//! - [`plain`]: SASL PLAIN checked against the same credentials.
//! - [`certificate`]: the user a verified client certificate names.
//! - [`token`]: API tokens, bearer credentials kept as hashes.
//! - [`acl`]: permissions in Kafka's model and the [`Authorizer`] that
//!   decides every request, whichever listener it came through.
//! - [`store`]: the users and permissions of a server, durable under its
//!   data dir.
//! - [`gate`]: what the listeners of a running server share and ask.
//! - [`limits`]: the bounds of all of it.

pub mod acl;
pub mod certificate;
pub mod gate;
pub mod limits;
pub mod plain;
mod random;
pub mod scram;
pub mod store;
pub mod token;

pub use acl::{
    Acl, AclError, AclFilter, Authorizer, Decision, Operation, PatternFilter, PatternType,
    Permission, Reason, Request, ResourceType,
};
pub use gate::{Gate, Login, Principal};
pub use scram::{Authenticated, Credential, Mechanism, ScramError, ServerExchange, ServerFirst};
pub use store::{AuthStore, StoreError, UserInfo};
pub use token::{TokenInfo, TokenRefusal};
