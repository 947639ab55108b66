//! The cluster's accounts: WebDAV users and API tokens, listed, added, changed and removed
//! through the replicated metadata (every machine accepts them once the change is applied).

use axum::extract::{Path, State};
use axum::{Extension, Json};

use super::types::{
    AccountChange, TokenCreated, TokenInfo, TokenRequest, TokensResponse, UserAnswer, UserChange,
    UserInfo, UserRequest, UsersResponse,
};
use super::{bad, internal, ApiResult, ApiState, Caller};
use crate::accounts::{new_token, token_hash};
use crate::store::StoreError;
use wormfs_meta::command::{AccountRole, CommandV1, PutMode, TokenRecord, UserRecord, UserSource};
use wormfs_meta::{account_name_problem, UserRow};
use wormfs_parts::fsutil::now_ms;

fn info(u: &UserRow) -> UserInfo {
    UserInfo {
        name: u.user.name.clone(),
        role: u.user.role.as_str().into(),
        source: u.user.source.to_column(),
        created_ms: u.created_ms,
        changed_ms: u.changed_ms,
    }
}

fn role(r: Option<&str>) -> ApiResult<Option<AccountRole>> {
    r.map(|r| {
        AccountRole::parse(r)
            .ok_or_else(|| bad(format!("role {r:?}: expected \"ro\", \"rw\" or \"admin\"")))
    })
    .transpose()
}

fn check_hash(name: &str, hash: &str) -> ApiResult<()> {
    wormfs_webdav::auth::check_hash(hash).map_err(|e| {
        bad(format!(
            "user {name:?}: password_hash must be an Argon2 PHC string as `wormfs webdav \
             hash-password` prints it ({e})"
        ))
    })
}

/// What to say about a change to a user a config file defines.
fn config_note(u: &UserRow) -> Vec<String> {
    match u.user.source {
        UserSource::Config { node } => vec![format!(
            "user {} is defined in the [[webdav.users]] of node {node}'s config file: that node \
             puts it back as the file says at its next start; change or remove it there too",
            u.user.name
        )],
        _ => Vec::new(),
    }
}

pub(super) async fn users(State(st): State<ApiState>) -> ApiResult<Json<UsersResponse>> {
    let users = st.accounts.users().await.map_err(StoreError::from)?;
    Ok(Json(UsersResponse {
        users: users.iter().map(info).collect(),
    }))
}

async fn read_back(st: &ApiState, name: &str) -> ApiResult<UserRow> {
    st.accounts
        .user(name)
        .await
        .map_err(StoreError::from)?
        .ok_or_else(|| internal(format!("user {name} is not there after the change")))
}

pub(super) async fn user_add(
    State(st): State<ApiState>,
    Json(b): Json<UserRequest>,
) -> ApiResult<Json<UserAnswer>> {
    if let Some(p) = account_name_problem(&b.name, true) {
        return Err(bad(p));
    }
    check_hash(&b.name, &b.password_hash)?;
    let role = role(b.role.as_deref())?.unwrap_or(AccountRole::Rw);
    st.store
        .propose(CommandV1::PutUser {
            user: UserRecord {
                name: b.name.clone(),
                password_hash: b.password_hash,
                role,
                source: UserSource::Cli,
            },
            mode: PutMode::Create,
            time_ms: now_ms(),
        })
        .await?;
    tracing::info!(user = %b.name, role = role.as_str(), "account: user added");
    let u = read_back(&st, &b.name).await?;
    Ok(Json(UserAnswer {
        user: info(&u),
        notes: Vec::new(),
    }))
}

pub(super) async fn user_change(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Json(b): Json<UserChange>,
) -> ApiResult<Json<UserAnswer>> {
    let Some(old) = st.accounts.user(&name).await.map_err(StoreError::from)? else {
        return Err(
            StoreError::Rejected(wormfs_meta::command::Rejection::NotFound(format!(
                "user {name}"
            )))
            .into(),
        );
    };
    if b.password_hash.is_none() && b.role.is_none() {
        return Err(bad("nothing to change: give password_hash or role"));
    }
    if let Some(h) = &b.password_hash {
        check_hash(&name, h)?;
    }
    let new_role = role(b.role.as_deref())?.unwrap_or(old.user.role);
    let mut notes = config_note(&old);
    if old.user.role == AccountRole::Admin
        && new_role != AccountRole::Admin
        && st.accounts.admins().await.map_err(StoreError::from)? == 1
    {
        notes.push(format!(
            "{name} was the last user with the admin role: nobody can log in to the admin page \
             with a password now (an API token still can)"
        ));
    }
    st.store
        .propose(CommandV1::PutUser {
            user: UserRecord {
                name: name.clone(),
                password_hash: b.password_hash.unwrap_or(old.user.password_hash),
                role: new_role,
                source: old.user.source,
            },
            mode: PutMode::Replace,
            time_ms: now_ms(),
        })
        .await?;
    tracing::info!(user = %name, role = new_role.as_str(), "account: user changed");
    let u = read_back(&st, &name).await?;
    Ok(Json(UserAnswer {
        user: info(&u),
        notes,
    }))
}

pub(super) async fn user_remove(
    State(st): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Json<AccountChange>> {
    let old = st.accounts.user(&name).await.map_err(StoreError::from)?;
    st.store
        .propose(CommandV1::RemoveUser { name: name.clone() })
        .await?;
    tracing::info!(user = %name, "account: user removed");
    let mut notes = old.as_ref().map(config_note).unwrap_or_default();
    if st
        .accounts
        .users()
        .await
        .map_err(StoreError::from)?
        .is_empty()
    {
        notes.push(
            "no WebDAV user is left: WebDAV refuses every login until you add one \
             (`wormfs user add`)"
                .into(),
        );
    }
    Ok(Json(AccountChange { name, notes }))
}

pub(super) async fn tokens(
    State(st): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TokensResponse>> {
    let tokens = st.accounts.tokens().await.map_err(StoreError::from)?;
    Ok(Json(TokensResponse {
        tokens: tokens
            .iter()
            .map(|t| TokenInfo {
                name: t.token.name.clone(),
                read_only: t.token.read_only,
                machine: t.token.node,
                created_ms: t.created_ms,
                revoked_ms: t.revoked_ms,
                this_request: t.token.hash == caller.token_hash,
            })
            .collect(),
    }))
}

pub(super) async fn token_create(
    State(st): State<ApiState>,
    Json(b): Json<TokenRequest>,
) -> ApiResult<Json<TokenCreated>> {
    if let Some(p) = account_name_problem(&b.name, false) {
        return Err(bad(p));
    }
    let token = new_token();
    st.store
        .propose(CommandV1::AddToken {
            token: TokenRecord {
                name: b.name.clone(),
                hash: token_hash(&token),
                read_only: b.read_only,
                node: None,
            },
            time_ms: now_ms(),
        })
        .await?;
    tracing::info!(token = %b.name, read_only = b.read_only, "account: token created");
    Ok(Json(TokenCreated {
        name: b.name,
        token,
        read_only: b.read_only,
    }))
}

pub(super) async fn token_revoke(
    State(st): State<ApiState>,
    Path(name): Path<String>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<AccountChange>> {
    st.store
        .propose(CommandV1::RevokeToken {
            name: name.clone(),
            time_ms: now_ms(),
        })
        .await?;
    tracing::info!(token = %name, "account: token revoked");
    let mut notes = Vec::new();
    if caller.token_name == name {
        notes.push("that was the token of this request: it no longer works".into());
    }
    let tokens = st.accounts.tokens().await.map_err(StoreError::from)?;
    if let Some(t) = tokens
        .iter()
        .find(|t| t.token.name == name && t.revoked_ms.is_some() && t.token.node.is_some())
    {
        if let Some(node) = t.token.node {
            notes.push(format!(
                "it was node {node}'s local token (its admin-token file): the CLI on that machine \
                 needs another token now (--token or WORMFS_TOKEN)"
            ));
        }
    }
    Ok(Json(AccountChange { name, notes }))
}
