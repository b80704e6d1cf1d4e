//! The roles, and the one table of what each Coordinator method needs.
//!
//! ```text
//!   reader ──▶ operator ──▶ admin ◀── starter
//!   (read)     (+ cancel,   (+ register,  (start, and read
//!               retry)       everything)   the sagas it started)
//! ```
//!
//! Invariants:
//! - Every method of `sagad.v1.Coordinator` has a row in [`METHODS`] (a test
//!   reads the service's descriptor); a method without one is refused to
//!   every role, so a new RPC is closed until someone decides who may call it.
//! - A refusal names the least role that would be allowed.

use std::{fmt, str::FromStr};

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads everything: sagas, participants, definitions, the feed, the nodes.
    Reader,
    /// A service that starts sagas and reads the ones it started.
    Starter,
    /// A reader that may also cancel and retry sagas (and later operator actions).
    Operator,
    /// Everything: operator and starter, and registering participants.
    Admin,
}

/// What one method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reading the server's catalog or every saga's events (participants,
    /// definitions, the feed), or the cluster's nodes.
    Read,
    /// Reading sagas: every one for a reader, only its own for a starter.
    ReadSagas,
    /// Starting a saga.
    Start,
    /// Changing a saga's course: cancel, retry.
    Operate,
    /// Changing the server's catalog: participants.
    Administer,
}

/// What a role may do with one method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The call, whatever saga it names.
    All,
    /// The call, for the sagas the caller started only (a starter's reads).
    OwnSagas,
    /// Not this call: it needs `needs`.
    Denied { needs: Role },
}

/// Every Coordinator method, by its name in the proto, and what it needs.
pub const METHODS: [(&str, Access); 11] = [
    ("RegisterParticipant", Access::Administer),
    ("ListParticipants", Access::Read),
    ("StartSaga", Access::Start),
    ("GetSaga", Access::ReadSagas),
    ("ListSagas", Access::ReadSagas),
    ("WatchSaga", Access::ReadSagas),
    ("CancelSaga", Access::Operate),
    ("RetrySaga", Access::Operate),
    ("ListDefinitions", Access::Read),
    ("Subscribe", Access::Read),
    ("ListNodes", Access::Read),
];

/// What `method` (a bare name, `GetSaga`) needs; `None` for a method not in
/// the table, which no role may call.
pub fn access_of(method: &str) -> Option<Access> {
    METHODS
        .iter()
        .find(|(name, _)| *name == method)
        .map(|(_, access)| *access)
}

impl Access {
    /// The least role allowed it in full.
    pub fn least_role(self) -> Role {
        match self {
            Access::Read | Access::ReadSagas => Role::Reader,
            Access::Start => Role::Starter,
            Access::Operate => Role::Operator,
            Access::Administer => Role::Admin,
        }
    }
}

impl Role {
    /// Every role, from least to most.
    pub const ALL: [Role; 4] = [Role::Reader, Role::Starter, Role::Operator, Role::Admin];

    /// What this role may do with a method that needs `access`.
    pub fn grant(self, access: Access) -> Grant {
        let allowed = match (self, access) {
            (Role::Admin, _) => true,
            (Role::Reader | Role::Operator, Access::Read | Access::ReadSagas) => true,
            (Role::Operator, Access::Operate) => true,
            (Role::Starter, Access::Start) => true,
            (Role::Starter, Access::ReadSagas) => return Grant::OwnSagas,
            _ => false,
        };
        if allowed {
            Grant::All
        } else {
            Grant::Denied {
                needs: access.least_role(),
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Starter => "starter",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| format!("'{text}' is not a role (reader, starter, operator or admin)"))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn every_coordinator_method_has_a_row() {
        let files = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the compiled descriptor set decodes");
        let service = files
            .file
            .iter()
            .flat_map(|f| &f.service)
            .find(|s| s.name() == "Coordinator")
            .expect("the Coordinator service is compiled in");
        let mut names: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        let mut rows: Vec<&str> = METHODS.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        rows.sort_unstable();
        assert_eq!(names, rows);
    }

    #[test]
    fn roles_nest_as_documented() {
        use Grant::*;
        let expect = |role: Role, access: Access| role.grant(access);
        assert_eq!(expect(Role::Reader, Access::ReadSagas), All);
        assert_eq!(
            expect(Role::Reader, Access::Operate),
            Denied {
                needs: Role::Operator
            }
        );
        assert_eq!(
            expect(Role::Reader, Access::Start),
            Denied {
                needs: Role::Starter
            }
        );
        assert_eq!(expect(Role::Starter, Access::ReadSagas), OwnSagas);
        assert_eq!(
            expect(Role::Starter, Access::Read),
            Denied {
                needs: Role::Reader
            }
        );
        assert_eq!(expect(Role::Operator, Access::Operate), All);
        assert_eq!(
            expect(Role::Operator, Access::Administer),
            Denied { needs: Role::Admin }
        );
        for access in METHODS.map(|(_, a)| a) {
            assert_eq!(Role::Admin.grant(access), All);
        }
        assert_eq!(access_of("Nope"), None);
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().unwrap_err().contains("reader"));
    }
}
