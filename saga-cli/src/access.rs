//! Who may do what on the saga's topics: the Kafka ACLs `saga acl` provisions, derived from
//! each service's own `CONSUMES` and `EMITS`, so they cannot drift from what the services do.
//!
//! Everything not granted here is denied: Kafka's `StandardAuthorizer` denies a request no ACL
//! allows (`allow.everyone.if.no.acl.found=false`, its default).

use std::collections::BTreeSet;

use rskafka::client::acl::{AclBinding, AclOperation, AclPermissionType, PatternType, ResourceType};
use saga_runtime::Service;
use shared_events::Topic;

/// One kind of client of the saga and what its principal needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// `order-service`, …, `storefront`, `monitor`; the default principal is `User:<name>`.
    pub name: &'static str,
    pub about: &'static str,
    pub reads: Vec<Topic>,
    pub writes: Vec<Topic>,
    /// Topics it must see and may create although it neither reads nor writes them.
    pub creates: Vec<Topic>,
    /// Consumer groups it commits offsets under (READ), by name prefix after the topic prefix:
    /// a service's own, `payment-service`, `payment-service-2`, …
    pub commits_groups: Vec<&'static str>,
    /// Consumer groups whose offsets and lag it may see (DESCRIBE), likewise.
    pub describes_groups: Vec<&'static str>,
}

/// The services' names (and the view's), which are also their consumer groups' (see
/// `--group-id`).
const SERVICE_NAMES: [&str; 10] = [
    "order-service",
    "payment-service",
    "inventory-service",
    "shipping-service",
    "orders-view",
    "trip-service",
    "flight-service",
    "hotel-service",
    "car-service",
    "billing-service",
];

impl Role {
    /// A saga service: it reads what it consumes, writes what it emits and `DeadLetter` (the
    /// runtime parks input it cannot process), and sees and may create every topic of its saga
    /// (the first service to start creates the topics and all check their partition counts
    /// agree).
    /// CREATE on a topic that exists grants nothing else: not deleting it, not altering it.
    pub fn service<S: Service>() -> Role {
        let writes = saga_runtime::topics_written(S::EMITS);
        Role {
            name: S::NAME,
            about: "saga service",
            reads: S::CONSUMES.to_vec(),
            writes,
            creates: shared_events::Saga::topics_of(S::CONSUMES, S::EMITS),
            commits_groups: vec![S::NAME],
            describes_groups: vec![],
        }
    }

    /// Places orders and asks for cancellations, and nothing else: the topics customers write.
    pub fn storefront() -> Role {
        let writes = Topic::ALL.into_iter().filter(|t| t.is_customer_writable()).collect();
        Role {
            name: "storefront",
            about: "customers' orders, trips and cancellations",
            reads: vec![],
            writes,
            creates: vec![],
            commits_groups: vec![],
            describes_groups: vec![],
        }
    }

    /// Reads every topic (`saga trace`, `watch`, `stuck`, `audit`) and sees the services'
    /// consumer groups (`kafka-consumer-groups.sh --describe`); writes nothing.
    pub fn monitor() -> Role {
        Role {
            name: "monitor",
            about: "read-only: `saga` and monitoring",
            reads: Topic::ALL.to_vec(),
            writes: vec![],
            creates: vec![],
            commits_groups: vec![],
            describes_groups: SERVICE_NAMES.to_vec(),
        }
    }

    /// The ACLs granting this role's needs to `principal`, on topics named `<prefix><Topic>`.
    /// Literal names only: a prefixed ACL would also cover topics the saga does not have.
    pub fn bindings(&self, prefix: &str, principal: &str) -> BTreeSet<AclBinding> {
        let allow = |topic: Topic, operation| AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: format!("{prefix}{topic}"),
            pattern_type: PatternType::Literal,
            principal: principal.to_owned(),
            host: "*".to_owned(),
            operation,
            permission: AclPermissionType::Allow,
        };
        let mut out = BTreeSet::new();
        out.extend(self.reads.iter().map(|t| allow(*t, AclOperation::Read)));
        out.extend(self.writes.iter().map(|t| allow(*t, AclOperation::Write)));
        out.extend(self.creates.iter().map(|t| allow(*t, AclOperation::Create)));
        // DESCRIBE on its own, though READ and WRITE imply it: with one of those removed the
        // topic would vanish from its metadata, and a missing topic reads as a deleted one.
        out.extend(self.creates.iter().map(|t| allow(*t, AclOperation::Describe)));
        // Groups by prefix: a scaled-out service's instances each have a group of their own.
        let group = |name: &str, operation| AclBinding {
            resource_type: ResourceType::Group,
            resource_name: format!("{prefix}{name}"),
            pattern_type: PatternType::Prefixed,
            principal: principal.to_owned(),
            host: "*".to_owned(),
            operation,
            permission: AclPermissionType::Allow,
        };
        out.extend(self.commits_groups.iter().map(|g| group(g, AclOperation::Read)));
        out.extend(self.describes_groups.iter().map(|g| group(g, AclOperation::Describe)));
        out
    }
}

/// Every role, services first.
pub fn roles() -> Vec<Role> {
    vec![
        Role::service::<order_rules::Orders>(),
        Role::service::<payment_rules::Payment>(),
        Role::service::<inventory_rules::Inventory>(),
        Role::service::<shipping_rules::Shipping>(),
        // A saga service's grants, and no more: it reads every topic and writes only DeadLetter.
        Role::service::<orders_view_rules::OrdersView>(),
        Role::service::<trip_rules::Trips>(),
        Role::service::<flight_rules::Flights>(),
        Role::service::<hotel_rules::Hotels>(),
        Role::service::<car_rules::Cars>(),
        Role::service::<billing_rules::Billing>(),
        Role::storefront(),
        Role::monitor(),
    ]
}

/// The whole plan: each role with its principal and its ACLs.
pub fn plan(prefix: &str, principal_of: impl Fn(&Role) -> String) -> Vec<(Role, String, BTreeSet<AclBinding>)> {
    roles()
        .into_iter()
        .map(|role| {
            let principal = principal_of(&role);
            let bindings = role.bindings(prefix, &principal);
            (role, principal, bindings)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ops(role: &Role, topic: Topic) -> Vec<AclOperation> {
        role.bindings("p.", "User:x")
            .into_iter()
            .filter(|b| b.resource_name == format!("p.{topic}"))
            .map(|b| b.operation)
            .collect()
    }

    #[test]
    fn each_topic_is_written_by_its_owner_only() {
        // `Topic::emitted_by` is what the README's event table says; the services' EMITS are
        // what their code does. They must agree, or the ACLs would refuse a real event.
        for topic in Topic::ALL {
            let writers: Vec<&str> = roles().iter().filter(|r| r.writes.contains(&topic)).map(|r| r.name).collect();
            let expected: Vec<String> = match topic.emitted_by() {
                "customer" => vec!["storefront".to_owned()],
                // The view too: the runtime parks what it cannot read, whoever reads it.
                "any service" => SERVICE_NAMES.map(String::from).to_vec(),
                owner => vec![format!("{owner}-service")],
            };
            assert_eq!(writers, expected, "{topic}");
        }
    }

    #[test]
    fn storefront_may_write_two_topics_and_read_none() {
        let storefront = Role::storefront();
        assert_eq!(ops(&storefront, Topic::OrderCreated), vec![AclOperation::Write]);
        assert_eq!(ops(&storefront, Topic::OrderCancellationRequested), vec![AclOperation::Write]);
        for topic in [Topic::PaymentCompleted, Topic::OrderCancelled, Topic::StockReserved, Topic::DeadLetter] {
            assert!(ops(&storefront, topic).is_empty(), "{topic}");
        }
    }

    #[test]
    fn a_service_reads_what_it_consumes_and_sees_everything() {
        let payment = Role::service::<payment_rules::Payment>();
        assert_eq!(ops(&payment, Topic::OrderCreated), vec![AclOperation::Read, AclOperation::Create, AclOperation::Describe]);
        assert_eq!(ops(&payment, Topic::PaymentCompleted), vec![AclOperation::Write, AclOperation::Create, AclOperation::Describe]);
        assert_eq!(ops(&payment, Topic::StockReserved), vec![AclOperation::Create, AclOperation::Describe]);
        assert!(!ops(&payment, Topic::OrderCancelled).contains(&AclOperation::Write));
    }

    #[test]
    fn monitor_writes_nothing() {
        let monitor = Role::monitor();
        let bindings = monitor.bindings("", "User:monitor");
        let (topics, groups): (Vec<_>, Vec<_>) = bindings.iter().partition(|b| b.resource_type == ResourceType::Topic);
        assert_eq!(topics.len(), Topic::ALL.len());
        assert!(topics.iter().all(|b| b.operation == AclOperation::Read));
        // It sees the services' (and the view's) groups' offsets (their lag), and commits none.
        assert_eq!(groups.len(), SERVICE_NAMES.len());
        assert!(groups.iter().all(|b| b.operation == AclOperation::Describe && b.pattern_type == PatternType::Prefixed));
    }
}
