//! The `ldap` directory against a real OpenLDAP `slapd` on 127.0.0.1 (DESIGN §11), each test
//! with its own server. Without slapd these tests fail, naming `.ci/install-ldap`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::eventually;

use crate::support::slapd;

use crate::support::ldap_proxy;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use ldap_proxy::Proxy;
use ldap3::{Ldap, LdapConnAsync, Mod, Scope, SearchEntry};
use pim_operator::api::access_policy::{AccessPolicySpec, ActivationSettings};
use pim_operator::api::activation_request::{ActivationRequestSpec, Phase, Requester};
use pim_operator::api::common::{PrincipalRef, Role};
use pim_operator::api::eligible_assignment::{EligibleAssignmentSpec, Schedule};
use pim_operator::api::pim_group::{
    DirectoryGroupRef, GroupRoles, PimGroupSpec, RoleSettings, StandingAccess,
};
use pim_operator::api::{AccessPolicy, ActivationRequest, EligibleAssignment, PimGroup};
use pim_operator::clock::ManualClock;
use pim_operator::config::{Config, DirectoryConfig};
use pim_operator::controller::{self, Dependencies, Health};
use pim_operator::core::membership::Member;
use pim_operator::directory::instrumented::Instrumented;
use pim_operator::directory::ldap::{LdapConfig, LdapDirectory};
use pim_operator::directory::{Directories, Directory, GroupId};
use pim_operator::engine::TrustAsWritten;
use pim_operator::metrics::Metrics;
use pim_testkit::fake_apiserver::FakeApiServer;
use slapd::{ADMIN_DN, GROUPS, PEOPLE, PLACEHOLDER, SUFFIX, Slapd};
use tokio_util::sync::CancellationToken;

const OPS: &str = "cn=ops,ou=groups,dc=example,dc=org";

fn set(values: &[&str]) -> HashSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// An admin connection for seeding and for looking at what the backend wrote.
async fn admin(slapd: &Slapd) -> Ldap {
    let (conn, mut ldap) = LdapConnAsync::new(&slapd.url()).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind(ADMIN_DN, slapd::ADMIN_PASSWORD)
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap
}

async fn add(ldap: &mut Ldap, dn: &str, attrs: Vec<(&str, HashSet<String>)>) {
    let attrs: Vec<(String, HashSet<String>)> =
        attrs.into_iter().map(|(a, v)| (a.to_owned(), v)).collect();
    ldap.add(dn, attrs).await.unwrap().success().unwrap();
}

async fn add_user(ldap: &mut Ldap, uid: &str, mail: &str) -> String {
    let dn = format!("uid={},{PEOPLE}", ldap3::dn_escape(uid));
    add(
        ldap,
        &dn,
        vec![
            ("objectClass", set(&["inetOrgPerson"])),
            ("uid", set(&[uid])),
            ("cn", set(&[uid])),
            ("sn", set(&["Test"])),
            ("mail", set(&[mail])),
        ],
    )
    .await;
    dn
}

async fn add_group(ldap: &mut Ldap, dn: &str, cn: &str, members: &[&str]) {
    add(
        ldap,
        dn,
        vec![
            ("objectClass", set(&["groupOfNames"])),
            ("cn", set(&[cn])),
            ("member", set(members)),
        ],
    )
    .await;
}

/// The base tree: people alice, bob, carol; group `ops` holding only the placeholder.
async fn seed(slapd: &Slapd) -> Ldap {
    let mut ldap = seed_people(slapd).await;
    add_group(&mut ldap, OPS, "ops", &[PLACEHOLDER]).await;
    ldap
}

/// The base tree without groups: people alice, bob, carol.
async fn seed_people(slapd: &Slapd) -> Ldap {
    let mut ldap = admin(slapd).await;
    add(
        &mut ldap,
        SUFFIX,
        vec![
            ("objectClass", set(&["dcObject", "organization"])),
            ("dc", set(&["example"])),
            ("o", set(&["Example"])),
        ],
    )
    .await;
    for ou in [PEOPLE, GROUPS] {
        let name = ou.split(['=', ',']).nth(1).unwrap();
        add(
            &mut ldap,
            ou,
            vec![
                ("objectClass", set(&["organizationalUnit"])),
                ("ou", set(&[name])),
            ],
        )
        .await;
    }
    for user in ["alice", "bob", "carol"] {
        add_user(&mut ldap, user, &format!("{user}@example.org")).await;
    }
    ldap
}

/// The member values of a group as stored, lowercased.
async fn raw_members(ldap: &mut Ldap, group: &str) -> BTreeSet<String> {
    let (entries, _) = ldap
        .search(group, Scope::Base, "(objectClass=*)", vec!["member"])
        .await
        .unwrap()
        .success()
        .unwrap();
    let entry = SearchEntry::construct(entries.into_iter().next().unwrap());
    entry
        .attrs
        .get("member")
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.to_lowercase())
        .collect()
}

fn config(slapd: &Slapd) -> LdapConfig {
    LdapConfig {
        operation_timeout: "5s".into(),
        connect_timeout: "2s".into(),
        ..LdapConfig::new(slapd.url(), ADMIN_DN, slapd.password_file(), PEOPLE, GROUPS)
    }
}

fn user(name: &str) -> Member {
    Member::User(name.into())
}

fn users(names: &[&str]) -> BTreeSet<Member> {
    names.iter().map(|n| user(n)).collect()
}

fn pim_group(id: Option<&str>, display_name: Option<&str>, create: bool) -> PimGroup {
    PimGroup::new(
        "g",
        PimGroupSpec {
            directory: "ldap".into(),
            group: DirectoryGroupRef {
                id: id.map(Into::into),
                display_name: display_name.map(Into::into),
                create: create.then_some(true),
                description: Some("made by pim".into()),
            },
            roles: GroupRoles {
                member: RoleSettings { policy: "p".into() },
                owner: None,
            },
            standing_access: StandingAccess::Remove,
            rbac: None,
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn resolve_add_remove_and_their_repeats() {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let dir = LdapDirectory::new(config(&slapd));

    assert_eq!(
        dir.resolve_user("alice").await.unwrap(),
        format!("uid=alice,{PEOPLE}")
    );
    assert_eq!(dir.find_user("nobody").await.unwrap(), None);
    // The audit trail's principal id is the DN.
    assert_eq!(
        Directory::principal_id(&dir, &Member::User("alice".into()))
            .await
            .unwrap(),
        Some(format!("uid=alice,{PEOPLE}"))
    );
    let err = dir.resolve_user("nobody").await.unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("no user \"nobody\""), "{err}");

    let by_id = dir
        .ensure_group(&pim_group(Some(OPS), None, false))
        .await
        .unwrap();
    assert_eq!(by_id, GroupId(OPS.into()));
    let by_name = dir
        .ensure_group(&pim_group(None, Some("ops"), false))
        .await
        .unwrap();
    assert_eq!(by_name, GroupId(OPS.into()));
    let g = by_id;
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&[])
    );

    // Add, and add again.
    dir.add_member(&g, Role::Member, &user("alice"))
        .await
        .unwrap();
    dir.add_member(&g, Role::Member, &user("alice"))
        .await
        .unwrap();
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&["alice"])
    );
    dir.add_member(&g, Role::Member, &user("bob"))
        .await
        .unwrap();
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&["alice", "bob"])
    );
    assert_eq!(
        raw_members(&mut admin, OPS).await,
        BTreeSet::from([
            PLACEHOLDER.to_owned(),
            format!("uid=alice,{PEOPLE}"),
            format!("uid=bob,{PEOPLE}")
        ])
    );

    // Remove, and remove again; then the last real member.
    dir.remove_member(&g, Role::Member, &user("bob"))
        .await
        .unwrap();
    dir.remove_member(&g, Role::Member, &user("bob"))
        .await
        .unwrap();
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&["alice"])
    );
    dir.remove_member(&g, Role::Member, &user("alice"))
        .await
        .unwrap();
    dir.remove_member(&g, Role::Member, &user("alice"))
        .await
        .unwrap();
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&[])
    );
    assert_eq!(
        raw_members(&mut admin, OPS).await,
        BTreeSet::from([PLACEHOLDER.to_owned()]),
        "the placeholder keeps the groupOfNames valid"
    );

    // A principal the directory does not know: removing is a no-op, adding a clear error.
    dir.remove_member(&g, Role::Member, &user("nobody"))
        .await
        .unwrap();
    let err = dir
        .add_member(&g, Role::Member, &user("nobody"))
        .await
        .unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("no user"),
        "{err}"
    );
    // The owner role does not exist here.
    assert!(dir.list_members(&g, Role::Owner).await.unwrap().is_empty());
    assert!(
        dir.add_member(&g, Role::Owner, &user("alice"))
            .await
            .is_err()
    );
    // One connection served all of it.
    assert_eq!(dir.bind_attempts(), 1);
}

#[tokio::test]
async fn removing_the_last_member_of_a_group_without_the_placeholder() {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let alice = format!("uid=alice,{PEOPLE}");
    let solo = format!("cn=solo,{GROUPS}");
    add_group(&mut admin, &solo, "solo", &[&alice]).await;
    let dir = LdapDirectory::new(config(&slapd));
    let g = GroupId(solo.clone());
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&["alice"])
    );
    dir.remove_member(&g, Role::Member, &user("alice"))
        .await
        .unwrap();
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&[])
    );
    assert_eq!(
        raw_members(&mut admin, &solo).await,
        BTreeSet::from([PLACEHOLDER.to_owned()])
    );
}

#[tokio::test]
async fn groups_by_name_missing_ambiguous_and_created() {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let dir = LdapDirectory::new(config(&slapd));

    let err = dir
        .ensure_group(&pim_group(None, Some("absent"), false))
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("no groupOfNames named \"absent\""),
        "{err}"
    );
    let err = dir
        .ensure_group(&pim_group(
            Some(&format!("cn=absent,{GROUPS}")),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(
        !err.is_transient() && err.to_string().contains("no group with DN"),
        "{err}"
    );

    // Two groups with one name: an error that says so.
    add(
        &mut admin,
        &format!("ou=eu,{GROUPS}"),
        vec![
            ("objectClass", set(&["organizationalUnit"])),
            ("ou", set(&["eu"])),
        ],
    )
    .await;
    add_group(
        &mut admin,
        &format!("cn=twin,{GROUPS}"),
        "twin",
        &[PLACEHOLDER],
    )
    .await;
    add_group(
        &mut admin,
        &format!("cn=twin,ou=eu,{GROUPS}"),
        "twin",
        &[PLACEHOLDER],
    )
    .await;
    let err = dir
        .ensure_group(&pim_group(None, Some("twin"), true))
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("ambiguous"), "{err}");
    assert!(err.to_string().contains("two or more groups"), "{err}");

    // Created when asked, with a name that needs escaping in the DN.
    let name = "Ops, (EU) *#1";
    let created = dir
        .ensure_group(&pim_group(None, Some(name), true))
        .await
        .unwrap();
    assert!(created.0.to_lowercase().ends_with(GROUPS), "{created:?}");
    assert!(created.0.contains("\\"), "escaped: {created:?}");
    assert_eq!(
        raw_members(&mut admin, &created.0).await,
        BTreeSet::from([PLACEHOLDER.to_owned()])
    );
    // Found, not created twice.
    let again = dir
        .ensure_group(&pim_group(None, Some(name), true))
        .await
        .unwrap();
    assert_eq!(again, created);
    dir.add_member(&created, Role::Member, &user("carol"))
        .await
        .unwrap();
    assert_eq!(
        dir.list_members(&created, Role::Member).await.unwrap(),
        users(&["carol"])
    );
}

#[tokio::test]
async fn hostile_names_cannot_inject() {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let dir = LdapDirectory::new(config(&slapd));
    let g = GroupId(OPS.into());

    // Filter injection: each of these would match alice (or everyone) if pasted raw.
    for attack in [
        "*",
        "*)(uid=*",
        "alice)(uid=*",
        "al*",
        "alice\0",
        "alice)(|(objectClass=*)",
        "\\2a",
    ] {
        assert_eq!(dir.find_user(attack).await.unwrap(), None, "{attack:?}");
        let err = dir
            .add_member(&g, Role::Member, &user(attack))
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{attack:?}: {err}");
    }
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&[])
    );

    // Users whose names need escaping in DNs and filters work as themselves.
    let weird = [
        "o'brien, jr. (ops) *",
        "back\\slash",
        "#hash",
        " spaced ",
        "plus+eq=semi;<gt>\"",
        "zoë ✓ 日本",
    ];
    for (i, name) in weird.iter().enumerate() {
        add_user(&mut admin, name, &format!("weird{i}@example.org")).await;
        dir.add_member(&g, Role::Member, &user(name)).await.unwrap();
    }
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&weird)
    );
    for name in weird {
        dir.remove_member(&g, Role::Member, &user(name))
            .await
            .unwrap();
    }
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&[])
    );

    // A group name that would widen the filter finds nothing and creates exactly that name.
    let err = dir
        .ensure_group(&pim_group(None, Some("*"), false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no groupOfNames"), "{err}");
    let sneaky = "x)(cn=*";
    let created = dir
        .ensure_group(&pim_group(None, Some(sneaky), true))
        .await
        .unwrap();
    assert_ne!(created.0, OPS);
    let (entries, _) = admin
        .search(&created.0, Scope::Base, "(objectClass=*)", vec!["cn"])
        .await
        .unwrap()
        .success()
        .unwrap();
    let entry = SearchEntry::construct(entries.into_iter().next().unwrap());
    assert_eq!(entry.attrs["cn"], [sneaky]);
    // A DN-shaped name stays one RDN value under the group base.
    let created = dir
        .ensure_group(&pim_group(
            None,
            Some("evil,ou=people,dc=example,dc=org"),
            true,
        ))
        .await
        .unwrap();
    assert!(created.0.to_lowercase().ends_with(GROUPS), "{created:?}");
    assert!(
        created
            .0
            .to_lowercase()
            .starts_with("cn=evil\\2cou\\3dpeople"),
        "{created:?}"
    );
}

#[tokio::test]
async fn groups_of_unique_names_with_unique_member() {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let dir = LdapDirectory::new(LdapConfig {
        group_object_class: Some("groupOfUniqueNames".into()),
        member_attribute: "uniqueMember".into(),
        ..config(&slapd)
    });
    let g = dir
        .ensure_group(&pim_group(None, Some("auditors"), true))
        .await
        .unwrap();
    assert_eq!(g.0.to_lowercase(), format!("cn=auditors,{GROUPS}"));
    for _ in 0..2 {
        dir.add_member(&g, Role::Member, &user("carol"))
            .await
            .unwrap();
    }
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&["carol"])
    );
    for _ in 0..2 {
        dir.remove_member(&g, Role::Member, &user("carol"))
            .await
            .unwrap();
    }
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&[])
    );
    let (entries, _) = admin
        .search(&g.0, Scope::Base, "(objectClass=*)", vec!["uniqueMember"])
        .await
        .unwrap()
        .success()
        .unwrap();
    let entry = SearchEntry::construct(entries.into_iter().next().unwrap());
    assert_eq!(entry.attrs["uniqueMember"], [PLACEHOLDER]);
}

#[tokio::test]
async fn reconnects_after_slapd_restarts() {
    let mut slapd = Slapd::start();
    seed(&slapd).await;
    let dir = LdapDirectory::new(config(&slapd));
    let g = GroupId(OPS.into());
    dir.add_member(&g, Role::Member, &user("alice"))
        .await
        .unwrap();
    assert_eq!(dir.bind_attempts(), 1);

    slapd.restart();
    // The first call notices the dropped connection, reconnects and succeeds.
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&["alice"])
    );
    dir.add_member(&g, Role::Member, &user("bob"))
        .await
        .unwrap();
    assert_eq!(dir.bind_attempts(), 2);

    // While slapd is down: a transient error, and back to work when it returns.
    slapd.stop();
    let err = dir.list_members(&g, Role::Member).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    slapd.restart();
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&["alice", "bob"])
    );
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_permanent_error_without_a_retry_storm() {
    let slapd = Slapd::start();
    seed(&slapd).await;
    let wrong = slapd.dir().join("wrong-password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let dir = LdapDirectory::new(LdapConfig {
        bind_password_file: wrong,
        ..config(&slapd)
    });
    let g = GroupId(OPS.into());
    for _ in 0..5 {
        let err = dir.list_members(&g, Role::Member).await.unwrap_err();
        assert!(!err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains("invalid credentials"), "{text}");
        assert!(text.contains(ADMIN_DN), "names the bind DN: {text}");
        assert!(!text.contains("not-the-password"), "{text}");
    }
    assert_eq!(dir.bind_attempts(), 1, "one bind, not one per call");

    let missing = LdapDirectory::new(LdapConfig {
        bind_password_file: slapd.dir().join("no-such-file"),
        ..config(&slapd)
    });
    let err = missing.list_members(&g, Role::Member).await.unwrap_err();
    assert!(err.to_string().contains("bind password file"), "{err}");
}

#[tokio::test]
async fn a_group_larger_than_a_page_lists_whole() {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let big = format!("cn=big,{GROUPS}");
    let mut dns = vec![PLACEHOLDER.to_owned()];
    let mut mails = Vec::new();
    for i in 0..23 {
        let uid = format!("user{i:02}");
        let mail = format!("{uid}@example.org");
        dns.push(add_user(&mut admin, &uid, &mail).await);
        mails.push(mail);
    }
    let refs: Vec<&str> = dns.iter().map(String::as_str).collect();
    add_group(&mut admin, &big, "big", &refs).await;
    let g = GroupId(big);

    // Principals are mail addresses, which the DNs (uid=…) do not carry: mapped by a paged
    // memberOf search, 5 entries a page.
    let by_mail = LdapDirectory::new(LdapConfig {
        user_filter: "(&(objectClass=inetOrgPerson)(mail={username}))".into(),
        user_attribute: "mail".into(),
        page_size: 5,
        ..config(&slapd)
    });
    let mail_refs: Vec<&str> = mails.iter().map(String::as_str).collect();
    assert_eq!(
        by_mail.list_members(&g, Role::Member).await.unwrap(),
        users(&mail_refs)
    );
    assert!(
        by_mail.pages_fetched() >= 5,
        "23 entries at 5 a page: {} pages",
        by_mail.pages_fetched()
    );
    by_mail
        .remove_member(&g, Role::Member, &user("user07@example.org"))
        .await
        .unwrap();
    assert_eq!(
        by_mail.list_members(&g, Role::Member).await.unwrap().len(),
        22
    );

    // Principals are uids, the DNs' RDNs: no search needed.
    let by_uid = LdapDirectory::new(LdapConfig {
        page_size: 5,
        ..config(&slapd)
    });
    let listed = by_uid.list_members(&g, Role::Member).await.unwrap();
    assert_eq!(listed.len(), 22);
    assert!(listed.contains(&user("user22")));
    assert_eq!(by_uid.pages_fetched(), 0);

    // Without memberOf, each unmapped DN is read on its own: same answer.
    let no_member_of = LdapDirectory::new(LdapConfig {
        user_filter: "(mail={username})".into(),
        user_attribute: "mail".into(),
        member_of_attribute: String::new(),
        ..config(&slapd)
    });
    assert_eq!(
        no_member_of.list_members(&g, Role::Member).await.unwrap(),
        by_mail.list_members(&g, Role::Member).await.unwrap()
    );
}

#[tokio::test]
async fn nested_groups_and_dangling_members() {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let alice = format!("uid=alice,{PEOPLE}");
    let bob = format!("uid=bob,{PEOPLE}");
    let inner = format!("cn=inner,{GROUPS}");
    let middle = format!("cn=middle,{GROUPS}");
    add_group(&mut admin, &inner, "inner", &[&alice]).await;
    add_group(&mut admin, &middle, "middle", &[&inner, PLACEHOLDER]).await;
    let dir = LdapDirectory::new(config(&slapd));
    let g = GroupId(OPS.into());

    // A group principal is a group name under groupBase.
    dir.add_member(&g, Role::Member, &Member::Group("middle".into()))
        .await
        .unwrap();
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        BTreeSet::from([Member::Group("middle".into())])
    );
    assert!(dir.is_transitive_member(&alice, OPS).await.unwrap());
    assert!(dir.is_transitive_member(&alice, &inner).await.unwrap());
    assert!(!dir.is_transitive_member(&bob, OPS).await.unwrap());

    // A loop does not hang the walk.
    admin
        .modify(&inner, vec![Mod::Add("member".to_owned(), set(&[OPS]))])
        .await
        .unwrap()
        .success()
        .unwrap();
    assert!(!dir.is_transitive_member(&bob, OPS).await.unwrap());

    // A member whose entry is gone is listed by its DN, and can be removed by it.
    let ghost = format!("uid=ghost,ou=gone,{SUFFIX}");
    admin
        .modify(OPS, vec![Mod::Add("member".to_owned(), set(&[&ghost]))])
        .await
        .unwrap()
        .success()
        .unwrap();
    let listed = dir.list_members(&g, Role::Member).await.unwrap();
    assert!(listed.contains(&Member::User(ghost.clone())), "{listed:?}");
    dir.remove_member(&g, Role::Member, &Member::User(ghost.clone()))
        .await
        .unwrap();
    dir.remove_member(&g, Role::Member, &Member::Group("middle".into()))
        .await
        .unwrap();
    assert_eq!(
        dir.list_members(&g, Role::Member).await.unwrap(),
        users(&[])
    );
}

#[tokio::test]
async fn the_config_file_takes_an_ldap_directory() {
    let text = "directories:\n  corp:\n    type: ldap\n    url: ldaps://ldap.example.org:636\n    caFile: /etc/pim/ca.pem\n    bindDn: cn=pim,ou=services,dc=example,dc=org\n    bindPasswordFile: /var/run/secrets/pim/ldap-password\n    userBase: ou=people,dc=example,dc=org\n    groupBase: ou=groups,dc=example,dc=org\n    pageSize: 200\n";
    let settings = Config::parse(text, "values.yaml").unwrap();
    let DirectoryConfig::Ldap(ldap) = &settings.config.directories["corp"] else {
        panic!("not ldap");
    };
    assert_eq!(ldap.page_size, 200);
    assert_eq!(ldap.user_attribute, "uid");
    let bad = text.replace("pageSize: 200", "memberTtl: 1h");
    let err = Config::parse(&bad, "values.yaml").unwrap_err().to_string();
    assert!(
        err.contains("directories.corp.memberTtl: needs activeDirectory"),
        "{err}"
    );
    let bad = text.replace("pageSize: 200", "bindPassword: hunter2");
    assert!(Config::parse(&bad, "values.yaml").is_err());
}

#[tokio::test]
async fn start_tls_and_ldaps_with_a_ca_file() {
    let slapd = Slapd::start_tls();
    seed(&slapd).await;
    let g = GroupId(OPS.into());
    let start_tls = LdapDirectory::new(LdapConfig {
        start_tls: true,
        ca_file: Some(slapd.ca_file()),
        ..config(&slapd)
    });
    start_tls
        .add_member(&g, Role::Member, &user("alice"))
        .await
        .unwrap();
    let ldaps = LdapDirectory::new(LdapConfig {
        url: slapd.ldaps_url(),
        ca_file: Some(slapd.ca_file()),
        ..config(&slapd)
    });
    assert_eq!(
        ldaps.list_members(&g, Role::Member).await.unwrap(),
        users(&["alice"])
    );

    // A server certificate from a CA we were not told to trust: a permanent error.
    slapd::make_ca_and_server_cert(slapd.dir(), "other");
    let untrusted = LdapDirectory::new(LdapConfig {
        url: slapd.ldaps_url(),
        ca_file: Some(slapd.dir().join("other-ca.pem")),
        ..config(&slapd)
    });
    let err = untrusted.list_members(&g, Role::Member).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    let not_pem = slapd.dir().join("slapd.conf");
    let bad_ca = LdapDirectory::new(LdapConfig {
        url: slapd.ldaps_url(),
        ca_file: Some(not_pem),
        ..config(&slapd)
    });
    let err = bad_ca.list_members(&g, Role::Member).await.unwrap_err();
    assert!(err.to_string().contains("caFile"), "{err}");
}

#[test]
fn the_ldap_guide_examples_parse() {
    let section =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ldap.md")).unwrap();
    let blocks: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(
        blocks.len(),
        2,
        "one OpenLDAP and one Active Directory example"
    );
    for block in blocks {
        let settings = Config::parse(block, "docs/ldap.md").unwrap();
        assert!(
            settings
                .config
                .directories
                .values()
                .all(|d| matches!(d, DirectoryConfig::Ldap(_)))
        );
    }
}

// --- What real servers refuse (docs/directories.md, "LDAP and Active Directory") -----------

/// Grants, revokes and lists the member role, each expected to succeed.
async fn grant(dir: &LdapDirectory, g: &GroupId, name: &str) {
    dir.add_member(g, Role::Member, &user(name)).await.unwrap();
}

async fn revoke(dir: &LdapDirectory, g: &GroupId, name: &str) {
    dir.remove_member(g, Role::Member, &user(name))
        .await
        .unwrap();
}

async fn listed(dir: &LdapDirectory, g: &GroupId) -> BTreeSet<Member> {
    dir.list_members(g, Role::Member).await.unwrap()
}

/// Active Directory answers an add of a member already present with 68 (00000562) and a removal
/// of a member not present with 53 (00000561) unless the permissive-modify control is sent
/// (`rules::AD_ALREADY_A_MEMBER`, `rules::AD_NOT_A_MEMBER`). Here the look-alike hides the
/// control from the rootDSE, so the backend cannot send it and must read AD's answers: both
/// are done, not errors.
#[tokio::test]
async fn active_directory_already_a_member_and_not_a_member_are_done() {
    let slapd = Slapd::start();
    seed(&slapd).await;
    let proxy = Proxy::start(slapd.port()).await;
    proxy.answer_as_active_directory();
    proxy.hide_permissive_modify();
    let dir = LdapDirectory::new(LdapConfig {
        url: proxy.url(),
        ..config(&slapd)
    });
    let g = GroupId(OPS.into());
    for _ in 0..2 {
        grant(&dir, &g, "alice").await;
    }
    grant(&dir, &g, "bob").await;
    for _ in 0..2 {
        revoke(&dir, &g, "bob").await;
    }
    assert_eq!(listed(&dir, &g).await, users(&["alice"]));
    // The look-alike did answer as AD: once "already a member", once "not a member".
    let answered: Vec<Option<u32>> = proxy.modifies().iter().map(|m| m.slapd_answer).collect();
    assert_eq!(
        answered.iter().filter(|a| **a == Some(20)).count(),
        1,
        "{answered:?}"
    );
    assert_eq!(
        answered.iter().filter(|a| **a == Some(16)).count(),
        1,
        "{answered:?}"
    );
}

/// With `activeDirectory: true` every member write carries the permissive-modify control, and
/// the server honours it: slapd (which honours the control without listing it in its rootDSE)
/// answers success to a repeated add where it would answer 20, so the AD look-alike has
/// nothing to turn into 68.
#[tokio::test]
async fn active_directory_writes_carry_the_permissive_modify_control() {
    let slapd = Slapd::start();
    seed(&slapd).await;
    let proxy = Proxy::start(slapd.port()).await;
    proxy.answer_as_active_directory();
    let dir = LdapDirectory::new(LdapConfig {
        url: proxy.url(),
        active_directory: true,
        group_object_class: Some("groupOfNames".into()),
        ..config(&slapd)
    });
    let g = GroupId(OPS.into());
    for _ in 0..2 {
        grant(&dir, &g, "alice").await;
    }
    for _ in 0..2 {
        revoke(&dir, &g, "alice").await;
    }
    let listed = dir.list_members(&g, Role::Member).await.unwrap();
    assert!(!listed.contains(&user("alice")), "{listed:?}");
    let modifies = proxy.modifies();
    assert_eq!(modifies.len(), 4, "{modifies:?}");
    assert!(modifies.iter().all(|m| m.permissive), "{modifies:?}");
    // Honoured: the repeated add is a success, not 20. (slapd 2.5.13 with the memberof overlay
    // still answers the repeated delete with 16, which the look-alike turns into AD's 53 and
    // the rule table takes as done.)
    assert_eq!(modifies[1].slapd_answer, Some(0), "{modifies:?}");
}

/// A server that refuses member values naming no entry (slapd's memberof overlay with
/// `memberof-dangling error`) refuses the default placeholder, which names none. Removing a
/// member that is not the last one must not touch the placeholder; removing the last one needs
/// a placeholder that names an entry (`placeholderMember`), and without one the refusal is
/// reported with the reason.
#[tokio::test]
async fn removals_where_the_server_refuses_dangling_members() {
    let slapd = Slapd::start_refusing_dangling_members();
    let mut admin = seed_people(&slapd).await;
    let alice = format!("uid=alice,{PEOPLE}");
    let bob = format!("uid=bob,{PEOPLE}");
    let team = format!("cn=team,{GROUPS}");
    add_group(&mut admin, &team, "team", &[&alice, &bob]).await;
    // The server does refuse the default placeholder.
    let refused = admin
        .modify(
            &team,
            vec![Mod::Add("member".to_owned(), set(&[PLACEHOLDER]))],
        )
        .await
        .unwrap();
    assert_eq!(refused.rc, 19, "memberof-dangling error: {refused:?}");

    let g = GroupId(team.clone());
    let dir = LdapDirectory::new(config(&slapd));
    revoke(&dir, &g, "bob").await;
    assert_eq!(listed(&dir, &g).await, users(&["alice"]));
    assert_eq!(
        raw_members(&mut admin, &team).await,
        BTreeSet::from([alice.to_lowercase()]),
        "no placeholder while a real member is left"
    );

    // The last member, with a placeholder the server refuses: reported, naming the setting.
    let err = dir
        .remove_member(&g, Role::Member, &user("alice"))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("placeholderMember"), "{err}");
    assert!(err.to_string().contains("LDAP result 19"), "{err}");

    // With a placeholder that names an entry, the last member goes.
    // Outside userBase: a placeholder there could be a real person (refused by validation).
    let keeper = format!("cn=pim-keeper,{GROUPS}");
    add(
        &mut admin,
        &keeper,
        vec![
            ("objectClass", set(&["organizationalRole"])),
            ("cn", set(&["pim-keeper"])),
        ],
    )
    .await;
    let dir = LdapDirectory::new(LdapConfig {
        placeholder_member: Some(keeper.clone()),
        ..config(&slapd)
    });
    revoke(&dir, &g, "alice").await;
    assert_eq!(listed(&dir, &g).await, users(&[]));
    assert_eq!(
        raw_members(&mut admin, &team).await,
        BTreeSet::from([keeper.to_lowercase()])
    );
    grant(&dir, &g, "carol").await;
    assert_eq!(listed(&dir, &g).await, users(&["carol"]));
}

/// Members of [`big_group`].
const BIG: usize = 5000;

/// Group `big` of [`BIG`] users `u0000`… (mail `u0000@example.org`…), added with one
/// `ldapmodify` run; its DN.
fn big_group(slapd: &Slapd) -> String {
    let big = format!("cn=big,{GROUPS}");
    let mut ldif = String::new();
    let mut group = format!("dn: {big}\nobjectClass: groupOfNames\ncn: big\n");
    for i in 0..BIG {
        let dn = format!("uid=u{i:04},{PEOPLE}");
        ldif.push_str(&format!(
            "dn: {dn}\nobjectClass: inetOrgPerson\nuid: u{i:04}\ncn: u{i:04}\nsn: T\nmail: u{i:04}@example.org\n\n"
        ));
        group.push_str(&format!("member: {dn}\n"));
    }
    ldif.push_str(&group);
    slapd.ldapmodify(&ldif);
    big
}

/// Active Directory returns a `member` attribute of more than MaxValRange (1500) values in
/// ranges (`member;range=0-1499`, …, `member;range=4500-*`); slapd does not, so the look-alike
/// cuts slapd's answer as AD would. The listing follows every range, and a removal works.
#[tokio::test]
async fn active_directory_ranged_member_values_are_followed() {
    let slapd = Slapd::start();
    seed(&slapd).await;
    let g = GroupId(big_group(&slapd));
    let proxy = Proxy::start(slapd.port()).await;
    proxy.serve_member_in_ranges(1500);
    let dir = LdapDirectory::new(LdapConfig {
        url: proxy.url(),
        ..config(&slapd)
    });
    let members = listed(&dir, &g).await;
    assert_eq!(members.len(), BIG);
    assert!(members.contains(&user("u0000")) && members.contains(&user("u4999")));
    assert_eq!(
        proxy.ranges_served(),
        [
            "member;range=0-1499",
            "member;range=1500-2999",
            "member;range=3000-4499",
            "member;range=4500-*"
        ]
    );
    revoke(&dir, &g, "u4999").await;
    let members = listed(&dir, &g).await;
    assert_eq!(members.len(), BIG - 1);
    assert!(!members.contains(&user("u4999")));
}

/// `operationTimeout` bounds each page of a paged search, not the whole search: a group of
/// 5,000 members listed by `mail` (a paged memberOf search, 250 a page), each request held
/// 60 ms on its way, takes at least 20 × 60 ms = 1.2 s in all, over the 1 s timeout, while no
/// page comes near it.
#[tokio::test]
async fn operation_timeout_bounds_each_page_of_a_5000_member_listing() {
    let slapd = Slapd::start();
    seed(&slapd).await;
    let big = big_group(&slapd);

    let proxy = Proxy::start(slapd.port()).await;
    let dir = LdapDirectory::new(LdapConfig {
        url: proxy.url(),
        user_filter: "(&(objectClass=inetOrgPerson)(mail={username}))".into(),
        user_attribute: "mail".into(),
        page_size: 250,
        operation_timeout: "1s".into(),
        ..config(&slapd)
    });
    proxy.delay_requests(Duration::from_millis(60));
    let listed = dir.list_members(&GroupId(big), Role::Member).await.unwrap();
    assert_eq!(listed.len(), BIG);
    assert!(listed.contains(&user("u4999@example.org")));
    assert!(dir.pages_fetched() >= 20, "{} pages", dir.pages_fetched());
}

/// A connection left idle can be dropped silently on the way (a firewall or load balancer
/// forgetting the flow): the next call on it gets no answer. It is retried once on a fresh
/// connection before it counts as a failure.
#[tokio::test]
async fn a_call_that_times_out_on_an_idle_connection_is_retried_on_a_fresh_one() {
    let slapd = Slapd::start();
    seed(&slapd).await;
    let proxy = Proxy::start(slapd.port()).await;
    let dir = LdapDirectory::new(LdapConfig {
        url: proxy.url(),
        operation_timeout: "1s".into(),
        ..config(&slapd)
    });
    let g = GroupId(OPS.into());
    grant(&dir, &g, "alice").await;
    assert_eq!(proxy.connections(), 1);

    proxy.drop_idle_flows();
    assert_eq!(listed(&dir, &g).await, users(&["alice"]));
    assert_eq!(proxy.connections(), 2);
    assert_eq!(dir.bind_attempts(), 2);

    // A fresh connection that gets no answer either is a failure, after that one retry.
    proxy.drop_idle_flows();
    proxy.delay_requests(Duration::from_secs(30));
    let err = dir.list_members(&g, Role::Member).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        proxy.connections(),
        3,
        "the timed-out call was tried again on a fresh connection before failing"
    );
}

/// Principals compare as their attribute's matching rule does (`rules::ignores_case`): `uid`
/// ignores case, so "ALICE" is listed as the directory's "alice", and the plan keeps her.
#[tokio::test]
async fn a_principal_in_other_letter_case_is_listed_as_the_directory_spells_it() {
    let slapd = Slapd::start();
    seed(&slapd).await;
    let dir = LdapDirectory::new(config(&slapd));
    let g = GroupId(OPS.into());
    grant(&dir, &g, "ALICE").await;
    assert_eq!(listed(&dir, &g).await, users(&["alice"]));
    assert_eq!(dir.listed_as(&user("ALICE")), Some(user("alice")));
    assert_eq!(dir.listed_as(&user("alice")), None, "spelled as listed");
    assert_eq!(dir.listed_as(&user("bob")), None, "not listed");
    // Once the group no longer lists her, her spelling is not kept either.
    grant(&dir, &g, "bob").await;
    revoke(&dir, &g, "alice").await;
    assert_eq!(listed(&dir, &g).await, users(&["bob"]));
    assert_eq!(dir.listed_as(&user("ALICE")), None, "no longer listed");
}

// --- The controllers, with the ldap directory -------------------------------------------------

const WAIT: Duration = Duration::from_secs(20);

async fn phase(client: &Client, name: &str) -> Option<Phase> {
    let api: Api<ActivationRequest> = Api::all(client.clone());
    api.get(name).await.unwrap().status.and_then(|s| s.phase)
}

#[tokio::test]
async fn a_request_becomes_active_then_expires_in_ldap() {
    request_through_ldap(PrincipalRef::user("alice"), "alice").await;
}

/// The principal is written "Alice", the directory's `uid` is "alice": the same entry to a
/// `uid` (caseIgnoreMatch). A pass while the request is active must not remove her (standing
/// access) and add her back.
#[tokio::test]
async fn a_principal_in_other_letter_case_is_not_removed_and_added_again() {
    request_through_ldap(PrincipalRef::user("Alice"), "Alice").await;
}

/// The eligibility names an LDAP group that holds alice through a nested group; her request
/// carries no Kubernetes groups, so only the directory can vouch for her.
#[tokio::test]
async fn eligibility_through_a_nested_ldap_group() {
    request_through_ldap(PrincipalRef::group("analysts"), "alice").await;
}

/// `who` requests the group; the directory's entry is `uid=alice`.
async fn request_through_ldap(eligible: PrincipalRef, who: &str) {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let alice = format!("uid=alice,{PEOPLE}").to_lowercase();
    let team = format!("cn=team,{GROUPS}");
    add_group(&mut admin, &team, "team", &[&format!("uid=alice,{PEOPLE}")]).await;
    add_group(
        &mut admin,
        &format!("cn=analysts,{GROUPS}"),
        "analysts",
        &[&team],
    )
    .await;

    let server = FakeApiServer::start().await.unwrap();
    let clock = Arc::new(ManualClock::new("2026-03-02T09:00:00Z".parse().unwrap()));
    server.set_clock(clock.clone());
    let client = server.client();
    let pp = PostParams::default();
    let policy = AccessPolicySpec {
        activation: ActivationSettings {
            max_duration: Some("1h".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<AccessPolicy>::all(client.clone())
        .create(&pp, &AccessPolicy::new("p", policy))
        .await
        .unwrap();
    Api::<PimGroup>::all(client.clone())
        .create(&pp, &pim_group(Some(OPS), None, false))
        .await
        .unwrap();
    let assignment = EligibleAssignmentSpec {
        group: "g".into(),
        principal: eligible,
        schedule: Schedule {
            duration: Some("30d".into()),
            ..Default::default()
        },
        justification: Some("on call".into()),
        ..Default::default()
    };
    Api::<EligibleAssignment>::all(client.clone())
        .create(&pp, &EligibleAssignment::new("alice-g", assignment))
        .await
        .unwrap();

    let metrics = Arc::new(Metrics::new());
    let mut directories = Directories::default();
    let ldap: Arc<dyn Directory> = Arc::new(LdapDirectory::new(config(&slapd)));
    directories.insert("ldap", Instrumented::wrap(ldap, metrics.clone()));
    let settings = Config::parse(
        "resyncInterval: 1h\nconcurrency: 4\nleaderElection: {enabled: false}\nnamespace: pim-system\n",
        "test",
    )
    .unwrap();
    let deps = Dependencies {
        client: client.clone(),
        settings,
        directories,
        attestor: Arc::new(TrustAsWritten),
        clock: clock.clone(),
        metrics: metrics.clone(),
        health: Arc::new(Health::default()),
    };
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        controller::run(deps, token).await.unwrap();
    });

    let request = ActivationRequestSpec {
        group: "g".into(),
        duration: Some("30m".into()),
        justification: Some("incident 42".into()),
        requester: Some(Requester {
            username: who.into(),
            ..Default::default()
        }),
        principal: Some(who.into()),
        ..Default::default()
    };
    Api::<ActivationRequest>::all(client.clone())
        .create(&pp, &ActivationRequest::new("r", request))
        .await
        .unwrap();
    eventually("r is Active", || async {
        phase(&client, "r").await == Some(Phase::Active)
    })
    .await;
    assert!(raw_members(&mut admin, OPS).await.contains(&alice));

    // Another pass while the request is active: alice stays, and is not removed and re-added.
    let groups: Api<PimGroup> = Api::all(client.clone());
    let bumped = groups
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"group": {"description": "another pass"}}})),
        )
        .await
        .unwrap();
    let generation = bumped.metadata.generation;
    eventually("a pass saw the new generation", || async {
        groups
            .get("g")
            .await
            .unwrap()
            .status
            .and_then(|s| s.observed_generation)
            == generation
    })
    .await;
    assert!(raw_members(&mut admin, OPS).await.contains(&alice));
    let calls = metrics.encode();
    assert!(
        !calls.contains("operation=\"remove_member\""),
        "no removal while active: {}",
        calls
            .lines()
            .filter(|l| l.contains("directory_calls"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    clock.advance(SignedDuration::from_mins(30));
    eventually("r is Expired", || async {
        phase(&client, "r").await == Some(Phase::Expired)
    })
    .await;
    let probe = admin.clone();
    eventually("alice left ops", || {
        let mut probe = probe.clone();
        let alice = alice.clone();
        async move { !raw_members(&mut probe, OPS).await.contains(&alice) }
    })
    .await;
    assert_eq!(
        raw_members(&mut admin, OPS).await,
        BTreeSet::from([PLACEHOLDER.to_owned()])
    );
    assert!(
        metrics.encode().contains("ldap"),
        "the instrumented wrapper counted ldap calls"
    );
    stop.cancel();
    let _ = tokio::time::timeout(WAIT, task).await;
}

/// Eligibility granted to a directory group: the backend answers membership through nested
/// groups, by group name or DN, and says no for strangers and unknown names.
#[tokio::test]
async fn membership_of_directory_groups_is_transitive() {
    let slapd = Slapd::start();
    let mut admin = seed(&slapd).await;
    let team = format!("cn=team,{GROUPS}");
    let analysts = format!("cn=analysts,{GROUPS}");
    let alice = format!("uid=alice,{PEOPLE}");
    add_group(&mut admin, &team, "team", &[&alice]).await;
    add_group(&mut admin, &analysts, "analysts", &[&team]).await;
    let directory = LdapDirectory::new(config(&slapd));
    assert_eq!(
        directory.is_member_of("alice", "analysts").await.unwrap(),
        Some(true),
        "nested, by name"
    );
    assert_eq!(
        directory.is_member_of("alice", &analysts).await.unwrap(),
        Some(true),
        "nested, by DN"
    );
    assert_eq!(
        directory.is_member_of("alice", "team").await.unwrap(),
        Some(true),
        "direct"
    );
    assert_eq!(
        directory.is_member_of("bob", "analysts").await.unwrap(),
        Some(false)
    );
    assert_eq!(
        directory.is_member_of("nobody", "analysts").await.unwrap(),
        Some(false)
    );
    assert_eq!(
        directory
            .is_member_of("alice", "no-such-group")
            .await
            .unwrap(),
        Some(false)
    );
    assert_eq!(
        directory.is_member_of("*", "analysts").await.unwrap(),
        Some(false),
        "no filter injection"
    );
}
