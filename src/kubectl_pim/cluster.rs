//! Reading our kinds from the API server, tolerating malformed objects.

use kube::api::Api;

use super::error::{CliError, describe_api_error, is_forbidden, is_not_found};
use crate::api::{AccessPolicy, AccessReview, ActivationRequest, EligibleAssignment, PimGroup};
use crate::engine::Catalog;

/// Every well-formed object of a kind (a malformed one is left out, not fatal).
pub async fn list<K>(client: &kube::Client) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    crate::lenient::list_well_formed(client).await
}

/// PimGroups, AccessPolicies and EligibleAssignments (no requests).
pub async fn load_catalog(client: &kube::Client) -> Result<Catalog, kube::Error> {
    let mut catalog = Catalog::default();
    for group in list::<PimGroup>(client).await? {
        catalog.insert_group(group);
    }
    for policy in list::<AccessPolicy>(client).await? {
        catalog.insert_policy(policy);
    }
    for assignment in list::<EligibleAssignment>(client).await? {
        catalog.insert_assignment(assignment);
    }
    // Their denials end assignments. Requesters may not read reviews: then the assignments'
    // own status says which are denied (see `eligibility::mine`), and the webhook decides.
    match list::<AccessReview>(client).await {
        Ok(reviews) => reviews.into_iter().for_each(|r| catalog.insert_review(r)),
        Err(e) if is_forbidden(&e) || is_not_found(&e) => {}
        Err(e) => return Err(e),
    }
    Ok(catalog)
}

/// The catalog, or `None` with a note when the caller may not read it (so that a user without
/// read access still gets to ask; the operator and the webhook decide anyway).
pub async fn load_catalog_or_note(
    client: &kube::Client,
    out: &mut impl std::io::Write,
    purpose: &str,
) -> Result<Option<Catalog>, CliError> {
    match load_catalog(client).await {
        Ok(catalog) => Ok(Some(catalog)),
        Err(e) if is_forbidden(&e) => {
            writeln!(
                out,
                "note: you may not read PimGroups, AccessPolicies or EligibleAssignments, so {purpose} \
                 is skipped (the pim-requester ClusterRole grants this read access)."
            )?;
            Ok(None)
        }
        Err(e) => Err(CliError::api(
            "list PimGroups, AccessPolicies and EligibleAssignments",
            e,
        )),
    }
}

pub async fn requests(client: &kube::Client) -> Result<Vec<ActivationRequest>, CliError> {
    list::<ActivationRequest>(client)
        .await
        .map_err(|e| CliError::api("list ActivationRequests", e))
}

pub async fn get_request(
    api: &Api<ActivationRequest>,
    name: &str,
) -> Result<ActivationRequest, CliError> {
    api.get(name).await.map_err(|e| {
        if is_not_found(&e) {
            CliError::NotFound(name.to_owned())
        } else {
            CliError::Api(describe_api_error(
                &format!("read ActivationRequest {name}"),
                &e,
            ))
        }
    })
}
