//! Connection and link errors of the AMQP transport, each classified as transient or permanent.

use crate::error::{Error, ErrorCode};

/// Whether retrying the same connection can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Network trouble: the broker may come back.
    Transient,
    /// Authentication, TLS or configuration: retrying will not help until someone fixes it.
    Permanent,
}

/// A connection error with its classification.
#[derive(Debug)]
pub struct ConnectError {
    /// The error (code `CONNECTION_FAILED` or `INVALID_CONFIG`).
    pub error: Error,
    /// Transient or permanent.
    pub kind: Failure,
}

pub(super) fn transient(error: Error) -> ConnectError {
    ConnectError {
        error,
        kind: Failure::Transient,
    }
}

pub(super) fn permanent(error: Error) -> ConnectError {
    ConnectError {
        error,
        kind: Failure::Permanent,
    }
}

/// `condition: description` of an AMQP error.
pub fn describe(e: &fe2o3_amqp::types::definitions::Error) -> String {
    let cond = condition(&e.condition);
    match &e.description {
        Some(d) => format!("{cond}: {d}"),
        None => cond,
    }
}

/// The condition symbol of an AMQP error, e.g. `amqp:not-found`.
pub fn condition(c: &fe2o3_amqp::types::definitions::ErrorCondition) -> String {
    use fe2o3_amqp::types::definitions::ErrorCondition as C;
    let sym: fe2o3_amqp::types::primitives::Symbol = match c {
        C::AmqpError(a) => a.into(),
        C::ConnectionError(a) => a.into(),
        C::SessionError(a) => a.into(),
        C::LinkError(a) => a.into(),
        C::Custom(s) => s.clone(),
    };
    sym.0
}

/// What a link attach is for: the words of its error messages and the code of a refusal.
#[derive(Clone, Copy)]
pub(super) enum LinkRole {
    /// A sender: a refusal means the target cannot be published to (`NO_ROUTE`).
    Sender,
    /// A receiver: a refusal means this service may not consume (`CONNECTION_FAILED`).
    Receiver,
}

/// Classifies a failed attach: the broker refusing it (closing the link or ending the session with
/// an error) is permanent, anything else transient. `what` names the target or source.
pub(super) fn attach_error(
    role: LinkRole,
    what: &str,
    refused: Option<&fe2o3_amqp::types::definitions::Error>,
    other: &dyn std::fmt::Display,
) -> ConnectError {
    match (role, refused) {
        (_, Some(err)) => permanent(refusal(role, what, err)),
        (LinkRole::Sender, None) => transient(Error::new(
            ErrorCode::ConnectionFailed,
            format!("cannot attach a sender to {what} ({other})"),
        )),
        (LinkRole::Receiver, None) => transient(Error::new(
            ErrorCode::ConnectionFailed,
            format!("cannot attach a receiver to {what} ({other})"),
        )),
    }
}

/// The broker refusing a link to `what` with `err` (at its attach or when it closed it later):
/// `NO_ROUTE` for a sender, `CONNECTION_FAILED` for a receiver.
pub(super) fn refusal(
    role: LinkRole,
    what: &str,
    err: &fe2o3_amqp::types::definitions::Error,
) -> Error {
    match role {
        LinkRole::Sender => Error::new(
            ErrorCode::NoRoute,
            format!("the broker refused to publish to {what}: {}", describe(err)),
        ),
        LinkRole::Receiver => Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "the broker refused to let this service consume from {what}: {}",
                describe(err)
            ),
        ),
    }
}

/// The broker's refusal behind a failed send: the link was closed or detached with an error whose
/// condition says the target cannot be published to (`amqp:not-found`, `amqp:unauthorized-access`,
/// `amqp:not-allowed`, `amqp:resource-deleted`). Sending again cannot help then; any other loss of
/// the link (a forced detach, a lost connection) is retried.
pub(super) fn send_refusal(
    e: &fe2o3_amqp::link::SendError,
) -> Option<&fe2o3_amqp::types::definitions::Error> {
    use fe2o3_amqp::link::{DetachError, LinkStateError, SendError};
    use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
    let err = match e {
        SendError::LinkStateError(
            LinkStateError::RemoteClosedWithError(err)
            | LinkStateError::RemoteDetachedWithError(err),
        )
        | SendError::Detached(DetachError::RemoteDetachedWithError(err)) => err,
        _ => return None,
    };
    matches!(
        err.condition,
        ErrorCondition::AmqpError(
            AmqpError::NotFound
                | AmqpError::UnauthorizedAccess
                | AmqpError::NotAllowed
                | AmqpError::ResourceDeleted
        )
    )
    .then_some(err)
}

/// An attach that did not complete within the connect timeout.
pub(super) fn attach_timeout(role: LinkRole, what: &str) -> ConnectError {
    let link = match role {
        LinkRole::Sender => "a sender",
        LinkRole::Receiver => "a receiver",
    };
    transient(Error::new(
        ErrorCode::ConnectionFailed,
        format!("attaching {link} to {what} timed out"),
    ))
}
