//! Checking objects against the structural OpenAPI schemas in [`super::openapi`], the way an
//! API server checks custom resources against their CRD.
//!
//! - [`validate`]: the value constraints (type, enum, required, lengths, bounds, item counts,
//!   the patterns and CEL rules the loopback server knows), reported as [`FieldError`]s with
//!   Kubernetes' wording.
//! - [`unknown_fields`] and [`prune`]: fields the schema does not declare, which a real server
//!   drops, warns about or refuses depending on [`FieldValidation`].
//! - [`apply_defaults`]: the schema's `default:` values, filled in as a real server fills a
//!   custom resource's.

mod defaults;
mod field;
mod rules;
mod schema;
mod unknown;

pub use defaults::apply_defaults;
pub use field::{ErrorType, FieldError, quote};
pub use schema::validate;
pub use unknown::{FieldValidation, prune, unknown_fields};
