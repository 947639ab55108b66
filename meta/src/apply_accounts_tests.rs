//! The cluster's accounts applied on a real SQLite file: users created, replaced, imported and
//! removed, the generated first user made at most once, tokens added once per hash and revoked
//! for good, invalid names refused, and every change visible in the version the caches watch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::command::{
    AccountRole, CommandV1, Outcome, PutMode, Rejection, TokenRecord, UserRecord, UserSource,
};
use crate::testutil::{test_db, TestDb, T};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn user(name: &str, role: AccountRole, source: UserSource) -> UserRecord {
    UserRecord {
        name: name.into(),
        password_hash: HASH.into(),
        role,
        source,
    }
}

fn token(name: &str, n: u8, node: Option<u64>) -> TokenRecord {
    TokenRecord {
        name: name.into(),
        hash: format!("{n:02x}").repeat(32),
        read_only: false,
        node,
    }
}

impl TestDb {
    async fn put_user(&self, u: UserRecord, mode: PutMode) -> Outcome {
        self.apply(CommandV1::PutUser {
            user: u,
            mode,
            time_ms: T,
        })
        .await
    }

    async fn user_names(&self) -> Vec<(String, AccountRole, UserSource)> {
        self.db
            .accounts()
            .await
            .unwrap()
            .users
            .into_iter()
            .map(|u| (u.user.name, u.user.role, u.user.source))
            .collect()
    }
}

fn rejected(o: Outcome) -> Rejection {
    match o {
        Outcome::Rejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn users_are_created_replaced_imported_and_removed() {
    let t = test_db().await;
    assert_eq!(t.db.accounts_version().await.unwrap(), 0);
    let ann = user("ann", AccountRole::Rw, UserSource::Cli);
    assert_eq!(
        t.put_user(ann.clone(), PutMode::Create).await,
        Outcome::Done
    );
    let v1 = t.db.accounts_version().await.unwrap();
    assert!(v1 > 0);
    assert!(matches!(
        rejected(t.put_user(ann.clone(), PutMode::Create).await),
        Rejection::AlreadyExists(_)
    ));
    assert!(matches!(
        rejected(
            t.put_user(
                user("bob", AccountRole::Ro, UserSource::Cli),
                PutMode::Replace
            )
            .await
        ),
        Rejection::NotFound(_)
    ));
    let ann_ro = user("ann", AccountRole::Ro, UserSource::Cli);
    assert_eq!(t.put_user(ann_ro, PutMode::Replace).await, Outcome::Done);
    // A config file's user: added, and again (the file wins over a change made since).
    let cfg = user("kid", AccountRole::Ro, UserSource::Config { node: 3 });
    assert_eq!(
        t.put_user(cfg.clone(), PutMode::Upsert).await,
        Outcome::Done
    );
    assert_eq!(t.put_user(cfg, PutMode::Upsert).await, Outcome::Done);
    assert_eq!(
        t.user_names().await,
        vec![
            ("ann".into(), AccountRole::Ro, UserSource::Cli),
            (
                "kid".into(),
                AccountRole::Ro,
                UserSource::Config { node: 3 }
            ),
        ]
    );
    assert!(t.db.accounts_version().await.unwrap() > v1);
    assert_eq!(
        t.apply(CommandV1::RemoveUser { name: "ann".into() }).await,
        Outcome::Done
    );
    assert!(matches!(
        rejected(t.apply(CommandV1::RemoveUser { name: "ann".into() }).await),
        Rejection::NotFound(_)
    ));
    assert_eq!(t.user_names().await.len(), 1);
}

#[tokio::test]
async fn the_generated_first_user_is_made_once_ever() {
    let t = test_db().await;
    let admin = user("admin", AccountRole::Admin, UserSource::Generated);
    assert_eq!(
        t.put_user(admin.clone(), PutMode::First).await,
        Outcome::Done
    );
    // A second machine's generated admin loses, even with another name.
    let other = user("admin2", AccountRole::Admin, UserSource::Generated);
    assert!(matches!(
        rejected(t.put_user(other.clone(), PutMode::First).await),
        Rejection::AlreadyExists(_)
    ));
    // Removing every user does not bring the generated one back.
    t.apply(CommandV1::RemoveUser {
        name: "admin".into(),
    })
    .await;
    assert!(matches!(
        rejected(t.put_user(other, PutMode::First).await),
        Rejection::AlreadyExists(_)
    ));
    assert!(t.user_names().await.is_empty());
    // Nor does a cluster whose first user came from a config file generate one.
    let t = test_db().await;
    let cfg = user("ann", AccountRole::Rw, UserSource::Config { node: 1 });
    assert_eq!(t.put_user(cfg, PutMode::Upsert).await, Outcome::Done);
    assert!(matches!(
        rejected(t.put_user(admin, PutMode::First).await),
        Rejection::AlreadyExists(_)
    ));
}

#[tokio::test]
async fn bad_names_and_hashes_are_refused_with_nothing_changed() {
    let t = test_db().await;
    for name in ["", "a:b", "tab\there", &"x".repeat(65)] {
        let r = rejected(
            t.put_user(
                user(name, AccountRole::Rw, UserSource::Cli),
                PutMode::Create,
            )
            .await,
        );
        assert!(matches!(r, Rejection::Invalid(_)), "{name:?}: {r:?}");
    }
    let mut plain = user("ann", AccountRole::Rw, UserSource::Cli);
    plain.password_hash = "hunter2".into();
    assert!(matches!(
        rejected(t.put_user(plain, PutMode::Create).await),
        Rejection::Invalid(_)
    ));
    let mut short = token("t", 1, None);
    short.hash = "abc".into();
    assert!(matches!(
        rejected(
            t.apply(CommandV1::AddToken {
                token: short,
                time_ms: T
            })
            .await
        ),
        Rejection::Invalid(_)
    ));
    assert_eq!(t.db.accounts_version().await.unwrap(), 0);
    assert!(t.db.accounts().await.unwrap().users.is_empty());
}

#[tokio::test]
async fn tokens_are_added_once_per_hash_and_revoked_for_good() {
    let t = test_db().await;
    let add = |tok: TokenRecord| CommandV1::AddToken {
        token: tok,
        time_ms: T,
    };
    assert_eq!(
        t.apply(add(token("node-1", 1, Some(1)))).await,
        Outcome::Done
    );
    let v = t.db.accounts_version().await.unwrap();
    // The same machine registering again: no change.
    assert_eq!(
        t.apply(add(token("node-1", 1, Some(1)))).await,
        Outcome::Done
    );
    assert_eq!(t.db.accounts_version().await.unwrap(), v);
    // Another token under a live name: refused.
    assert!(matches!(
        rejected(t.apply(add(token("node-1", 2, None))).await),
        Rejection::AlreadyExists(_)
    ));
    assert_eq!(
        t.apply(CommandV1::RevokeToken {
            name: "node-1".into(),
            time_ms: T + 1
        })
        .await,
        Outcome::Done
    );
    assert!(matches!(
        rejected(
            t.apply(CommandV1::RevokeToken {
                name: "node-1".into(),
                time_ms: T + 2
            })
            .await
        ),
        Rejection::NotFound(_)
    ));
    // The revoked hash registered again (the machine restarting) stays revoked.
    assert_eq!(
        t.apply(add(token("node-1", 1, Some(1)))).await,
        Outcome::Done
    );
    // The name is free again for a new token.
    assert_eq!(t.apply(add(token("node-1", 3, None))).await, Outcome::Done);
    let acc = t.db.accounts().await.unwrap();
    let summary: Vec<(String, Option<u64>, Option<u64>)> = acc
        .tokens
        .iter()
        .map(|r| (r.token.name.clone(), r.token.node, r.revoked_ms))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("node-1".into(), Some(1), Some(T + 1)),
            ("node-1".into(), None, None),
        ]
    );
}
