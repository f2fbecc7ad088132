//! The loopback API server: an in-memory subset of the Kubernetes API over HTTPS.
//!
//! [`Store`] keeps the objects, [`kinds::Kinds`] says which kinds exist (the built-in
//! ones and those [`crds`] serves from CustomResourceDefinitions), [`serve`] answers
//! HTTPS on a listener for clients holding the token of [`Credentials`], and
//! [`write_kubeconfig`] hands clients (kube-rs, kubectl, Contour) the address, CA and token.
//!
//! Behind [`serve`]: [`discovery`] documents, [`openapi`] documents, the verbs in `handlers`,
//! [`watch`] streams, [`selectors`], [`patch`] formats, server-side [`apply`] and [`tables`]
//! for `kubectl get`. Writes pass
//! [`admission`], which checks custom resources against their schemas with [`validation`].

pub mod access;
pub mod admission;
pub mod apply;
pub mod crds;
pub mod discovery;
pub mod errors;
mod handlers;
pub mod kinds;
pub mod openapi;
pub mod patch;
pub mod selectors;
pub mod server;
pub mod store;
pub mod tables;
pub mod validation;
pub mod watch;

pub use access::Credentials;
pub use errors::ApiError;
pub use handlers::LOG_FILE_ANNOTATION;
pub use server::{serve, write_kubeconfig};
pub use store::{Batch, Changes, EventType, Store, Subresource, WatchEvent};
