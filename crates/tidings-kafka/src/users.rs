//! Kafka's user admin APIs on the running server: DescribeUserScramCredentials
//! and AlterUserScramCredentials (what `kafka-configs.sh --entity-type users`
//! and `Admin.alterUserScramCredentials` send), over the same store as
//! `tidings users`. The client salts and hashes the password itself
//! (`SaltedPassword`); the server keeps the SCRAM keys made from it, never
//! the password, and a change takes effect for the next login (connections
//! already logged in stay so, as on Kafka).
//!
//! As Kafka decides them: Describe on the cluster to describe, Alter to
//! alter; answers per user, checked in Kafka's order: an empty name or an
//! iteration count out of 4096..=16384 is `UNACCEPTABLE_CREDENTIAL`, an
//! unknown mechanism `UNSUPPORTED_SASL_MECHANISM`, a user named more than
//! once in a request (whatever the mechanisms: Apache Kafka 4.3 answers
//! so) `DUPLICATE_RESOURCE`, deleting a credential the user has not
//! `RESOURCE_NOT_FOUND` — and a user with any of these has none of its
//! alterations made. The others are made in one durable change.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tidings_auth::acl::Operation;
use tidings_auth::limits::{SCRAM_ITERATIONS_MAX, SCRAM_ITERATIONS_MIN, USERS_MAX};
use tidings_auth::{Credential, Gate, Mechanism, StoreError};

use crate::access::Access;

fn mechanism(code: i8) -> Option<Mechanism> {
    match code {
        1 => Some(Mechanism::Sha256),
        2 => Some(Mechanism::Sha512),
        _ => None,
    }
}

fn mechanism_code(m: Mechanism) -> i8 {
    match m {
        Mechanism::Sha256 => 1,
        Mechanism::Sha512 => 2,
    }
}

fn message(text: &str) -> Option<StrBytes> {
    Some(StrBytes::from_string(text.to_owned()))
}

pub(crate) fn describe(
    gate: Option<&Arc<Gate>>,
    access: &Access,
    request: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let gate = match crate::acls::allowed(gate, access, Operation::Describe) {
        Ok(gate) => gate,
        Err((code, text)) => {
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(code.code())
                .with_error_message(message(&text))
        }
    };
    let infos = |user: &str| -> Option<Vec<CredentialInfo>> {
        gate.with_store(|s| s.user(user)).map(|u| {
            u.mechanisms
                .into_iter()
                .map(|(m, iterations)| {
                    CredentialInfo::default()
                        .with_mechanism(mechanism_code(m))
                        .with_iterations(i32::try_from(iterations).unwrap_or(i32::MAX))
                })
                .collect()
        })
    };
    let wanted: Vec<String> = match &request.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        // Every user.
        _ => gate.with_store(|s| s.users().into_iter().map(|u| u.name).collect()),
    };
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for user in &wanted {
        *counts.entry(user).or_default() += 1;
    }
    let mut answered = BTreeSet::new();
    let mut results = Vec::new();
    for user in &wanted {
        if !answered.insert(user.as_str()) {
            continue;
        }
        let result = DescribeUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.clone()));
        results.push(if counts[user.as_str()] > 1 {
            result
                .with_error_code(ResponseError::DuplicateResource.code())
                .with_error_message(message(
                    "Cannot describe SCRAM credentials for the same user twice in a single request",
                ))
        } else {
            match infos(user) {
                Some(infos) => result.with_credential_infos(infos),
                None => result
                    .with_error_code(ResponseError::ResourceNotFound.code())
                    .with_error_message(message(
                        "Attempt to describe a user credential that does not exist",
                    )),
            }
        });
    }
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

/// One user's alterations, before they are checked.
#[derive(Default)]
struct Alterations {
    set: Vec<(i8, i32, Vec<u8>, Vec<u8>)>,
    remove: Vec<i8>,
}

pub(crate) async fn alter(
    gate: Option<&Arc<Gate>>,
    access: &Access,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Per user, in the order the request names them.
    let mut order: Vec<String> = Vec::new();
    let mut by_user: HashMap<String, Alterations> = HashMap::new();
    for d in &request.deletions {
        let user = d.name.to_string();
        if !by_user.contains_key(&user) {
            order.push(user.clone());
        }
        by_user.entry(user).or_default().remove.push(d.mechanism);
    }
    for u in &request.upsertions {
        let user = u.name.to_string();
        if !by_user.contains_key(&user) {
            order.push(user.clone());
        }
        by_user.entry(user).or_default().set.push((
            u.mechanism,
            u.iterations,
            u.salt.to_vec(),
            u.salted_password.to_vec(),
        ));
    }
    let result = |user: &str, refusal: Option<(ResponseError, String)>| {
        let r = AlterUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.to_owned()));
        match refusal {
            None => r,
            Some((code, text)) => r
                .with_error_code(code.code())
                .with_error_message(message(&text)),
        }
    };
    let gate = match crate::acls::allowed(gate, access, Operation::Alter) {
        Ok(gate) => Arc::clone(gate),
        Err(refusal) => {
            let results = order
                .iter()
                .map(|user| result(user, Some(refusal.clone())))
                .collect();
            return AlterUserScramCredentialsResponse::default().with_results(results);
        }
    };
    let users = order.clone();
    let decided = tokio::task::spawn_blocking(move || {
        gate.change(|store| {
            let mut refusals: HashMap<String, (ResponseError, String)> = HashMap::new();
            let mut set = Vec::new();
            let mut remove = Vec::new();
            let mut room = USERS_MAX.saturating_sub(store.user_count());
            for user in &users {
                let alterations = &by_user[user];
                let checked = check(store, user, alterations).and_then(|checked| {
                    let new = store.user(user).is_none() && !checked.0.is_empty();
                    if new && room == 0 {
                        return Err((
                            ResponseError::UnacceptableCredential,
                            format!("this server holds at most {USERS_MAX} users"),
                        ));
                    }
                    room -= usize::from(new);
                    Ok(checked)
                });
                match checked {
                    Ok((s, r)) => {
                        set.extend(s.into_iter().map(|c| (user.clone(), c)));
                        remove.extend(r.into_iter().map(|m| (user.clone(), m)));
                    }
                    Err(refusal) => {
                        refusals.insert(user.clone(), refusal);
                    }
                }
            }
            match store.alter_credentials(set.clone(), &remove) {
                Ok(_) => Ok(refusals),
                // Removing the last login: the removals are refused, the
                // rest made.
                Err(e @ StoreError::LastLogin) => {
                    for (user, _) in &remove {
                        refusals.insert(
                            user.clone(),
                            (ResponseError::UnacceptableCredential, e.to_string()),
                        );
                    }
                    store
                        .alter_credentials(set, &[])
                        .map(|_| refusals)
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    let results = match decided {
        Ok(mut refusals) => order
            .iter()
            .map(|user| {
                let refusal = refusals.remove(user);
                if refusal.is_none() {
                    // The audit trail of who changed which user.
                    tracing::info!(principal = %access.principal(), user = %user, "AlterUserScramCredentials changed a user's credentials");
                }
                result(user, refusal)
            })
            .collect(),
        Err(e) => order
            .iter()
            .map(|user| result(user, Some((ResponseError::KafkaStorageError, e.clone()))))
            .collect(),
    };
    AlterUserScramCredentialsResponse::default().with_results(results)
}

type Checked = (Vec<Credential>, Vec<Mechanism>);

/// One user's alterations as credentials to set and mechanisms to remove,
/// or why none of them are made.
fn check(
    store: &tidings_auth::AuthStore,
    user: &str,
    alterations: &Alterations,
) -> Result<Checked, (ResponseError, String)> {
    let refuse = |code, text: &str| Err((code, text.to_owned()));
    if user.is_empty() {
        return refuse(
            ResponseError::UnacceptableCredential,
            "Username must not be empty",
        );
    }
    if !tidings_auth::store::valid_user_name(user) {
        return refuse(
            ResponseError::UnacceptableCredential,
            "a user name is at most 255 bytes, without control characters",
        );
    }
    for code in alterations
        .set
        .iter()
        .map(|(m, ..)| *m)
        .chain(alterations.remove.iter().copied())
    {
        if mechanism(code).is_none() {
            return refuse(
                ResponseError::UnsupportedSaslMechanism,
                "Unknown SCRAM mechanism",
            );
        }
    }
    for (_, iterations, ..) in &alterations.set {
        let iterations = u32::try_from(*iterations).unwrap_or(0);
        if iterations < SCRAM_ITERATIONS_MIN {
            return refuse(ResponseError::UnacceptableCredential, "Too few iterations");
        }
        if iterations > SCRAM_ITERATIONS_MAX {
            return refuse(ResponseError::UnacceptableCredential, "Too many iterations");
        }
    }
    // Kafka takes one alteration per user and request, whatever the
    // mechanisms.
    if alterations.set.len() + alterations.remove.len() > 1 {
        return refuse(
            ResponseError::DuplicateResource,
            "A user credential cannot be altered twice in the same request",
        );
    }
    let mut remove = Vec::new();
    for &code in &alterations.remove {
        let m = mechanism(code).expect("checked above");
        if store.credential(user, m).is_none() {
            return refuse(
                ResponseError::ResourceNotFound,
                "Attempt to delete a user credential that does not exist",
            );
        }
        remove.push(m);
    }
    let mut set = Vec::new();
    for (code, iterations, salt, salted) in &alterations.set {
        let m = mechanism(*code).expect("checked above");
        let iterations = u32::try_from(*iterations).expect("checked above");
        match Credential::from_salted_password(m, salt.clone(), iterations, salted) {
            Ok(c) => set.push(c),
            Err(e) => return Err((ResponseError::UnacceptableCredential, e.to_string())),
        }
    }
    Ok((set, remove))
}
