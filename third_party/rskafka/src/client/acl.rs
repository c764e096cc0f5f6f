//! Access control lists (patched in): the Java client's `AclBinding` and its parts, created
//! and described through [`ControllerClient`](super::controller::ControllerClient), and the
//! operations a principal may perform on a topic ([`Client::topic_authorized_operations`]).
//!
//! [`Client::topic_authorized_operations`]: super::Client::topic_authorized_operations

use std::fmt;

/// Declares a Kafka ACL enum with its wire codes and the names Kafka's tools print.
macro_rules! acl_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(missing_docs)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The code on the wire.
            pub const fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            /// The value for a code; `None` for a code this client does not know.
            pub fn from_code(code: i8) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $text,)*
                })
            }
        }
    };
}

acl_enum!(
    /// What an ACL's resource is (`org.apache.kafka.common.resource.ResourceType`).
    ResourceType {
        Any = 1, "Any";
        Topic = 2, "Topic";
        Group = 3, "Group";
        Cluster = 4, "Cluster";
        TransactionalId = 5, "TransactionalId";
        DelegationToken = 6, "DelegationToken";
        User = 7, "User";
    }
);

acl_enum!(
    /// How an ACL's resource name matches (`org.apache.kafka.common.resource.PatternType`).
    PatternType {
        Any = 1, "Any";
        Match = 2, "Match";
        Literal = 3, "Literal";
        Prefixed = 4, "Prefixed";
    }
);

acl_enum!(
    /// An operation on a resource (`org.apache.kafka.common.acl.AclOperation`).
    AclOperation {
        Any = 1, "Any";
        All = 2, "All";
        Read = 3, "Read";
        Write = 4, "Write";
        Create = 5, "Create";
        Delete = 6, "Delete";
        Alter = 7, "Alter";
        Describe = 8, "Describe";
        ClusterAction = 9, "ClusterAction";
        DescribeConfigs = 10, "DescribeConfigs";
        AlterConfigs = 11, "AlterConfigs";
        IdempotentWrite = 12, "IdempotentWrite";
        CreateTokens = 13, "CreateTokens";
        DescribeTokens = 14, "DescribeTokens";
        TwoPhaseCommit = 15, "TwoPhaseCommit";
    }
);

acl_enum!(
    /// Whether an ACL allows or denies (`org.apache.kafka.common.acl.AclPermissionType`).
    AclPermissionType {
        Any = 1, "Any";
        Deny = 2, "Deny";
        Allow = 3, "Allow";
    }
);

/// One ACL: `principal` from `host` is allowed (or denied) `operation` on the resources
/// `resource_name` names under `pattern_type`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// E.g. `User:payment-service`.
    pub principal: String,
    /// `*` for any host.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermissionType,
}

impl fmt::Display for AclBinding {
    /// One line: permission, operation, resource, principal, host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {} {:?} ({}) from {}",
            self.permission,
            self.principal,
            self.operation,
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.host,
        )
    }
}

/// Which ACLs [`describe_acls`](super::controller::ControllerClient::describe_acls) returns;
/// `None` and the `Any` values match everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermissionType,
}

impl AclBindingFilter {
    /// Matches every ACL.
    pub fn any() -> Self {
        Self {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermissionType::Any,
        }
    }
}

/// The operations a principal may perform on a resource, as the broker reports them: a bit
/// per [`AclOperation`] code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthorizedOperations(pub i32);

impl AuthorizedOperations {
    /// Whether `operation` is allowed.
    pub fn allows(self, operation: AclOperation) -> bool {
        let bit = operation.code();
        (0..32).contains(&bit) && self.0 & (1 << bit) != 0
    }

    /// The allowed operations, in code order.
    pub fn operations(self) -> Vec<AclOperation> {
        AclOperation::ALL
            .iter()
            .copied()
            .filter(|o| self.allows(*o))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_roundtrip() {
        for op in AclOperation::ALL {
            assert_eq!(AclOperation::from_code(op.code()), Some(*op));
        }
        assert_eq!(ResourceType::from_code(0), None);
    }

    #[test]
    fn bit_field() {
        // Read (3), Write (4) and Describe (8)
        let ops = AuthorizedOperations((1 << 3) | (1 << 4) | (1 << 8));
        assert!(ops.allows(AclOperation::Write));
        assert!(!ops.allows(AclOperation::Create));
        assert_eq!(
            ops.operations(),
            vec![
                AclOperation::Read,
                AclOperation::Write,
                AclOperation::Describe
            ]
        );
    }
}
