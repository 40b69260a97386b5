//! `wardgate user ...`: manage the users file of a (possibly running) proxy.
//!
//! Passwords are read from a TTY prompt or, with `--password-stdin`, the first line of stdin:
//! never from the command line, where other local users could read them in the process list.
//! A running proxy picks changes up within seconds (it watches the file) or on SIGHUP.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::path::Path;

use clap::Subcommand;

use super::CliError;
use crate::authn::password::check_policy;
use crate::authn::totp;
use crate::authn::users::{User, UserStore};
use crate::config::Config;
use crate::state::unix_now_ms;

/// `user` subcommands.
#[derive(Debug, Subcommand)]
pub(super) enum UserCommand {
    /// Add a user (password from a TTY prompt, or --password-stdin).
    Add {
        /// Login name.
        name: String,
        /// Role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Group (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Claim as KEY=VALUE (repeatable), e.g. patient_id=1001.
        #[arg(long = "claim")]
        claims: Vec<String>,
        /// Name shown in the portal.
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password (ends their sessions).
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user (ends their sessions).
    Disable {
        /// Login name.
        name: String,
    },
    /// Enable a disabled user.
    Enable {
        /// Login name.
        name: String,
    },
    /// List users.
    List,
    /// Remove a user's TOTP secret (ends their sessions; the next login enrolls again).
    TotpReset {
        /// Login name.
        name: String,
    },
    /// Give a user a new TOTP secret and print its otpauth URI (and a QR code on a terminal).
    Enroll {
        /// Login name.
        name: String,
    },
    /// Confirm a pending enrollment with a current code from the user's authenticator (for
    /// deployments whose users file is read-only to the proxy, such as a Kubernetes Secret).
    Confirm {
        /// Login name.
        name: String,
        /// The 6-digit code the authenticator shows now.
        #[arg(long)]
        code: String,
    },
}

fn runtime_error(err: impl std::fmt::Display) -> CliError {
    CliError::Runtime(err.to_string())
}

fn read_password(name: &str, from_stdin: bool, min_len: usize) -> Result<String, CliError> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(runtime_error)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first =
            rpassword::prompt_password(format!("Password for {name}: ")).map_err(runtime_error)?;
        let second = rpassword::prompt_password("Repeat password: ").map_err(runtime_error)?;
        if first != second {
            return Err(CliError::Runtime("passwords do not match".into()));
        }
        first
    };
    check_policy(&password, name, min_len).map_err(runtime_error)?;
    Ok(password)
}

/// Runs a `user` subcommand against the users file named by `config_path`.
pub(super) fn run(config_path: &Path, command: UserCommand) -> Result<(), CliError> {
    let config = Config::load(config_path)?;
    let auth = &config.auth;
    let store = UserStore::open(&auth.users_file, &auth.key_file, auth.key_env.as_deref())
        .map_err(runtime_error)?;
    let end_sessions = unix_now_ms();
    match command {
        UserCommand::Add {
            name,
            roles,
            groups,
            claims,
            display_name,
            password_stdin,
        } => {
            if name.is_empty()
                || name.len() > 128
                || name
                    .chars()
                    .any(|c| c.is_control() || c == ':' || c.is_whitespace())
            {
                return Err(CliError::Runtime(
                    "user names are 1-128 characters, without spaces, colons or control characters"
                        .into(),
                ));
            }
            let mut claim_map = BTreeMap::new();
            for claim in claims {
                let (key, value) = claim.split_once('=').ok_or_else(|| {
                    CliError::Runtime(format!("claim `{claim}` must be KEY=VALUE"))
                })?;
                claim_map.insert(key.to_string(), value.to_string());
            }
            let password = read_password(&name, password_stdin, auth.min_password_length)?;
            let hash = auth.hash.hash_blocking(&password).map_err(runtime_error)?;
            store
                .add(User {
                    name: name.clone(),
                    display_name: display_name.unwrap_or_default(),
                    roles,
                    groups,
                    claims: claim_map,
                    password: hash,
                    // A name used before (removed by editing the file, perhaps while Wardgate
                    // was down) must not hand the new account the old holder's sessions.
                    sessions_valid_after_ms: end_sessions,
                    ..User::default()
                })
                .map_err(runtime_error)?;
            println!("added user {name}; the first sign-in enrolls the authenticator (or run `wardgate user enroll {name}`)");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(&name, password_stdin, auth.min_password_length)?;
            let hash = auth.hash.hash_blocking(&password).map_err(runtime_error)?;
            store
                .update(&name, |u| {
                    u.password = hash;
                    u.sessions_valid_after_ms = end_sessions;
                })
                .map_err(runtime_error)?;
            println!("password of {name} changed; their sessions have ended");
        }
        UserCommand::Disable { name } => {
            store
                .update(&name, |u| {
                    u.disabled = true;
                    u.sessions_valid_after_ms = end_sessions;
                })
                .map_err(runtime_error)?;
            println!("{name} disabled; their sessions have ended");
        }
        UserCommand::Enable { name } => {
            store
                .update(&name, |u| u.disabled = false)
                .map_err(runtime_error)?;
            println!("{name} enabled");
        }
        UserCommand::List => {
            println!(
                "{:<20} {:<24} {:<24} {:<10} STATUS",
                "NAME", "ROLES", "GROUPS", "TOTP"
            );
            for user in store.all() {
                let totp = match (&user.totp_secret, user.totp_confirmed) {
                    (None, _) => "none",
                    (Some(_), false) => "pending",
                    (Some(_), true) => "enrolled",
                };
                let status = if user.disabled { "disabled" } else { "active" };
                println!(
                    "{:<20} {:<24} {:<24} {:<10} {}",
                    user.name,
                    user.roles.join(","),
                    user.groups.join(","),
                    totp,
                    status
                );
            }
        }
        UserCommand::TotpReset { name } => {
            store
                .update(&name, |u| {
                    u.totp_secret = None;
                    u.totp_confirmed = false;
                    u.totp_provisioned = false;
                    u.sessions_valid_after_ms = end_sessions;
                })
                .map_err(runtime_error)?;
            println!("TOTP of {name} removed; their sessions have ended and the next sign-in enrolls again");
        }
        UserCommand::Confirm { name, code } => {
            let user = store
                .get(&name)
                .ok_or_else(|| runtime_error(format!("no user {name}")))?;
            let secret = store
                .totp_secret(&user)
                .map_err(runtime_error)?
                .ok_or_else(|| {
                    runtime_error(format!(
                        "{name} has no TOTP secret: run `user enroll {name}` first"
                    ))
                })?;
            let now = crate::state::unix_now();
            let matches = [now.saturating_sub(30), now, now + 30].iter().any(|t| {
                let expected = totp::code_at(&secret, *t);
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    expected.as_bytes(),
                    code.trim().as_bytes(),
                ))
            });
            if !matches {
                return Err(runtime_error(format!(
                    "the code does not match {name}'s authenticator; enrollment stays pending"
                )));
            }
            store
                .update(&name, |u| u.totp_confirmed = true)
                .map_err(runtime_error)?;
            println!("TOTP enrollment of {name} confirmed");
        }
        UserCommand::Enroll { name } => {
            let secret = totp::new_secret();
            let sealed = store.seal(&name, &secret);
            store
                .update(&name, |u| {
                    u.totp_secret = Some(sealed);
                    u.totp_confirmed = false;
                    u.totp_provisioned = true;
                    u.sessions_valid_after_ms = end_sessions;
                })
                .map_err(runtime_error)?;
            let uri = totp::otpauth_uri(&secret, &name);
            println!("{uri}");
            if std::io::stdout().is_terminal() {
                if let Ok(code) = qrcode::QrCode::new(uri.as_bytes()) {
                    println!(
                        "{}",
                        code.render::<qrcode::render::unicode::Dense1x2>()
                            .quiet_zone(true)
                            .build()
                    );
                }
                println!("The first sign-in with a code from this secret confirms the enrollment.");
            }
        }
    }
    Ok(())
}
