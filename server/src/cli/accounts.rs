//! `wormfs user add|remove|passwd|list` and `wormfs token create|revoke|list`: the cluster's
//! WebDAV users and API tokens (every machine accepts them).

use anyhow::Context;
use clap::Subcommand;

use super::client::{print_json, Client};
use super::CliError;
use crate::api::types::{
    AccountChange, TokenCreated, TokenRequest, TokensResponse, UserAnswer, UserChange, UserRequest,
    UsersResponse,
};
use wormfs_meta::command::rfc3339_ms;

/// `wormfs user ...`
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a WebDAV user (every machine of the cluster accepts it at once). The password is
    /// read from standard input (asked for on a terminal), or generated with --generate.
    Add {
        /// The name (no `:`).
        name: String,
        /// ro (read only), rw (read and write) or admin (rw, and the admin page).
        #[arg(long, default_value = "rw")]
        role: String,
        /// Make a random password and print it once.
        #[arg(long)]
        generate: bool,
        /// Give the Argon2id hash (`wormfs webdav hash-password`) instead of a password.
        #[arg(long, value_name = "HASH", conflicts_with = "generate")]
        password_hash: Option<String>,
    },
    /// Remove a WebDAV user.
    Remove {
        /// The name.
        name: String,
    },
    /// Change a user's password (read from standard input, or --generate) or role.
    Passwd {
        /// The name.
        name: String,
        /// Make a random password and print it once.
        #[arg(long)]
        generate: bool,
        /// Give the Argon2id hash instead of a password.
        #[arg(long, value_name = "HASH", conflicts_with = "generate")]
        password_hash: Option<String>,
        /// Change the role only (ro, rw or admin), keeping the password.
        #[arg(long, conflicts_with_all = ["generate", "password_hash"])]
        role: Option<String>,
    },
    /// List the users.
    List,
}

/// `wormfs token ...`
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Make an API token (printed once; only its hash is kept). It works on every machine.
    Create {
        /// Its name (unique among live tokens).
        name: String,
        /// It may only read (GET and HEAD: status, ls, get, stat...).
        #[arg(long)]
        read_only: bool,
    },
    /// Revoke a token: it stops working on every machine.
    Revoke {
        /// Its name.
        name: String,
    },
    /// List the tokens (names, never the tokens).
    List,
}

/// The password: generated, or the first line of standard input.
fn password(generate: bool, name: &str) -> anyhow::Result<(String, bool)> {
    if generate {
        return Ok((crate::accounts::new_password(), true));
    }
    match crate::accounts::password_from_stdin(&format!("Password for {name}"))
        .context("read the password")?
    {
        Some(pw) => Ok((pw, false)),
        None => Err(CliError::usage(
            "empty password: give it on standard input (`echo PW | wormfs user add NAME`), or use --generate",
        )
        .into()),
    }
}

/// The hash to send: the one given, or the hash of the password (made here: the password
/// never leaves this machine), with the generated password to print.
fn hash_for(
    name: &str,
    generate: bool,
    given: Option<String>,
) -> anyhow::Result<(String, Option<String>)> {
    if let Some(h) = given {
        return Ok((h, None));
    }
    let (pw, generated) = password(generate, name)?;
    let hash = wormfs_webdav::auth::hash_password(&pw).map_err(|e| anyhow::anyhow!("hash: {e}"))?;
    Ok((hash, generated.then_some(pw)))
}

/// The answer as JSON, with the generated password (if any) as `password`.
fn print_with_password(v: &UserAnswer, generated: Option<&str>) {
    let mut j = serde_json::to_value(v).unwrap_or_default();
    if let (Some(pw), Some(o)) = (generated, j.as_object_mut()) {
        o.insert("password".into(), pw.into());
    }
    print_json(&j);
}

fn notes(n: &[String]) {
    for note in n {
        eprintln!("note: {note}");
    }
}

/// `wormfs user ...`.
pub(super) async fn user(c: &Client, cmd: UserCmd) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Add {
            name,
            role,
            generate,
            password_hash,
        } => {
            let (hash, generated) = hash_for(&name, generate, password_hash)?;
            let rq = c
                .req(reqwest::Method::POST, "/api/v1/users")
                .json(&UserRequest {
                    name: name.clone(),
                    password_hash: hash,
                    role: Some(role),
                });
            let v: UserAnswer = c.send_json(rq).await?;
            if c.json {
                print_with_password(&v, generated.as_deref());
                return Ok(());
            }
            println!(
                "user {} added ({}); every machine of the cluster accepts it",
                v.user.name, v.user.role
            );
            if let Some(pw) = generated {
                println!("password: {pw}");
            }
            notes(&v.notes);
        }
        UserCmd::Passwd {
            name,
            generate,
            password_hash,
            role,
        } => {
            let (hash, generated) = if role.is_some() {
                (None, None)
            } else {
                let (h, g) = hash_for(&name, generate, password_hash)?;
                (Some(h), g)
            };
            let rq = c
                .req(
                    reqwest::Method::PUT,
                    &format!("/api/v1/users/{}", enc(&name)),
                )
                .json(&UserChange {
                    password_hash: hash,
                    role,
                });
            let v: UserAnswer = c.send_json(rq).await?;
            if c.json {
                print_with_password(&v, generated.as_deref());
                return Ok(());
            }
            println!("user {} changed ({})", v.user.name, v.user.role);
            if let Some(pw) = generated {
                println!("password: {pw}");
            }
            notes(&v.notes);
        }
        UserCmd::Remove { name } => {
            let rq = c.req(
                reqwest::Method::DELETE,
                &format!("/api/v1/users/{}", enc(&name)),
            );
            let v: AccountChange = c.send_json(rq).await?;
            if c.json {
                print_json(&v);
                return Ok(());
            }
            println!("user {} removed", v.name);
            notes(&v.notes);
        }
        UserCmd::List => {
            let v: UsersResponse = c.get_json("/api/v1/users").await?;
            if c.json {
                print_json(&v);
                return Ok(());
            }
            println!(
                "{:<24}  {:<5}  {:<20}  FROM",
                "NAME", "ROLE", "CHANGED (UTC)"
            );
            for u in &v.users {
                println!(
                    "{:<24}  {:<5}  {:<20}  {}",
                    u.name,
                    u.role,
                    rfc3339_ms(u.changed_ms - u.changed_ms % 1000),
                    u.source
                );
            }
            if v.users.is_empty() {
                println!("(no users: WebDAV refuses every login; add one with `wormfs user add`)");
            }
        }
    }
    Ok(())
}

/// `wormfs token ...`.
pub(super) async fn token(c: &Client, cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { name, read_only } => {
            let rq = c
                .req(reqwest::Method::POST, "/api/v1/tokens")
                .json(&TokenRequest { name, read_only });
            let v: TokenCreated = c.send_json(rq).await?;
            if c.json {
                print_json(&v);
                return Ok(());
            }
            println!("{}", v.token);
            eprintln!(
                "token {} created{}: shown this once (only its hash is kept); it works on every \
                 machine of the cluster",
                v.name,
                if v.read_only { " (read only)" } else { "" }
            );
        }
        TokenCmd::Revoke { name } => {
            let rq = c.req(
                reqwest::Method::DELETE,
                &format!("/api/v1/tokens/{}", enc(&name)),
            );
            let v: AccountChange = c.send_json(rq).await?;
            if c.json {
                print_json(&v);
                return Ok(());
            }
            println!("token {} revoked on every machine", v.name);
            notes(&v.notes);
        }
        TokenCmd::List => {
            let v: TokensResponse = c.get_json("/api/v1/tokens").await?;
            if c.json {
                print_json(&v);
                return Ok(());
            }
            println!(
                "{:<24}  {:<6}  {:<20}  {:<20}  NOTE",
                "NAME", "ACCESS", "CREATED (UTC)", "REVOKED (UTC)"
            );
            for t in &v.tokens {
                let mut note = Vec::new();
                if let Some(m) = t.machine {
                    note.push(format!("admin-token of node {m}"));
                }
                if t.this_request {
                    note.push("this CLI's token".into());
                }
                println!(
                    "{:<24}  {:<6}  {:<20}  {:<20}  {}",
                    t.name,
                    if t.read_only { "read" } else { "full" },
                    rfc3339_ms(t.created_ms - t.created_ms % 1000),
                    t.revoked_ms
                        .map(|r| rfc3339_ms(r - r % 1000))
                        .unwrap_or_else(|| "-".into()),
                    note.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// A name as one path segment of a URL.
fn enc(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
