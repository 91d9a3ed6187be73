//! Authentication and authorization endpoints: TokenRequest, TokenReview,
//! (Self)SubjectAccessReview, and the OIDC issuer documents.

use serde_json::{Value, json};

use crate::api::{now, parse_body};
use crate::rbac::{self, Attrs, User};
use crate::server::{Req, State};
use crate::status::{ApiError, Subject};

/// Shortest token lifetime the real server accepts, and its default.
const MIN_EXPIRATION_SECS: i64 = 600;
const DEFAULT_EXPIRATION_SECS: i64 = 3600;

fn authorize(state: &State, user: &User, attrs: Attrs) -> Result<(), ApiError> {
    if rbac::allowed(&state.store(), user, &attrs) {
        Ok(())
    } else {
        Err(rbac::forbidden(user, &attrs))
    }
}

fn create_attrs(group: &str, resource: &str, sub: &str, name: &str, ns: &str) -> Attrs {
    Attrs::Resource {
        verb: "create".to_owned(),
        group: group.to_owned(),
        resource: resource.to_owned(),
        subresource: sub.to_owned(),
        name: name.to_owned(),
        namespace: ns.to_owned(),
    }
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`.
pub(crate) fn token_request(
    state: &State,
    req: &Req,
    ns: &str,
    name: &str,
) -> Result<(u16, Value), ApiError> {
    authorize(
        state,
        &req.user,
        create_attrs("", "serviceaccounts", "token", name, ns),
    )?;
    let body = parse_body(req)?;
    let uid = state
        .store()
        .get("", "serviceaccounts", ns, name)
        .and_then(|sa| sa["metadata"]["uid"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            ApiError::not_found(Subject {
                group: "",
                resource: "serviceaccounts",
                name,
            })
        })?;
    let signer = state.signer()?;
    let spec = &body["spec"];
    let audiences: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![signer.issuer.clone()]);
    let ttl = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION_SECS);
    if ttl < MIN_EXPIRATION_SECS {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            "",
            vec![crate::status::Cause {
                reason: "FieldValueInvalid".to_owned(),
                message: format!(
                    "Invalid value: {ttl}: may not specify a duration less than 10 minutes"
                ),
                field: "spec.expirationSeconds".to_owned(),
            }],
        ));
    }
    let issued_at = chrono::Utc::now().timestamp();
    let subject = crate::tokens::TokenSubject {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid,
        audiences: audiences.clone(),
    };
    let token = signer
        .issue(&subject, issued_at, ttl)
        .map_err(ApiError::internal)?;
    let expires = chrono::DateTime::from_timestamp(issued_at + ttl, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok((
        201,
        json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": now()},
            "spec": {"audiences": audiences, "expirationSeconds": ttl, "boundObjectRef": spec["boundObjectRef"]},
            "status": {"token": token, "expirationTimestamp": expires},
        }),
    ))
}

/// Resolves a ServiceAccount token to its user, if the token is valid for one of `audiences`
/// (the API server's own audience when empty) and the ServiceAccount still exists.
pub(crate) fn user_for_token(
    state: &State,
    token: &str,
    audiences: &[String],
) -> Option<(User, Vec<String>)> {
    let signer = state.signer().ok()?;
    let sub = signer.verify(token, chrono::Utc::now().timestamp())?;
    let wanted: Vec<String> = if audiences.is_empty() {
        vec![signer.issuer.clone()]
    } else {
        audiences.to_vec()
    };
    let matched: Vec<String> = sub
        .audiences
        .iter()
        .filter(|a| wanted.contains(a))
        .cloned()
        .collect();
    if matched.is_empty() {
        return None;
    }
    let store = state.store();
    let sa = store.get("", "serviceaccounts", &sub.namespace, &sub.name)?;
    if sa["metadata"]["uid"].as_str() != Some(sub.uid.as_str()) {
        return None;
    }
    let name = format!("system:serviceaccount:{}:{}", sub.namespace, sub.name);
    Some((User::named(&name, &sub.uid, Vec::new()), matched))
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
pub(crate) fn token_review(state: &State, req: &Req) -> Result<(u16, Value), ApiError> {
    authorize(
        state,
        &req.user,
        create_attrs("authentication.k8s.io", "tokenreviews", "", "", ""),
    )?;
    let body = parse_body(req)?;
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let audiences: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let status = match user_for_token(state, token, &audiences) {
        Some((u, matched)) => json!({"authenticated": true, "audiences": matched,
            "user": {"username": u.name, "uid": u.uid, "groups": u.groups}}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Ok((
        201,
        json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "metadata": {"creationTimestamp": null},
        "spec": body["spec"], "status": status}),
    ))
}

fn attrs_from_spec(spec: &Value) -> Result<Attrs, ApiError> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let ra = &spec["resourceAttributes"];
    if ra.is_object() {
        return Ok(Attrs::Resource {
            verb: s(&ra["verb"]),
            group: s(&ra["group"]),
            resource: s(&ra["resource"]),
            subresource: s(&ra["subresource"]),
            name: s(&ra["name"]),
            namespace: s(&ra["namespace"]),
        });
    }
    let nr = &spec["nonResourceAttributes"];
    if nr.is_object() {
        return Ok(Attrs::NonResource {
            verb: s(&nr["verb"]),
            path: s(&nr["path"]),
        });
    }
    Err(ApiError::invalid("authorization.k8s.io", "SelfSubjectAccessReview", "", vec![crate::status::Cause {
        reason: "FieldValueRequired".to_owned(),
        message: "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".to_owned(),
        field: "spec.resourceAttributes".to_owned(),
    }]))
}

fn review_status(state: &State, user: &User, attrs: &Attrs) -> Value {
    if rbac::allowed(&state.store(), user, attrs) {
        json!({"allowed": true, "reason": "RBAC: allowed by a role binding"})
    } else {
        json!({"allowed": false})
    }
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`: may the caller do this?
pub(crate) fn self_subject_access_review(
    state: &State,
    req: &Req,
) -> Result<(u16, Value), ApiError> {
    authorize(
        state,
        &req.user,
        create_attrs(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "",
            "",
            "",
        ),
    )?;
    let body = parse_body(req)?;
    let attrs = attrs_from_spec(&body["spec"])?;
    let status = review_status(state, &req.user, &attrs);
    Ok((
        201,
        json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null}, "spec": body["spec"], "status": status}),
    ))
}

/// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`: may the named user do this?
pub(crate) fn subject_access_review(state: &State, req: &Req) -> Result<(u16, Value), ApiError> {
    authorize(
        state,
        &req.user,
        create_attrs("authorization.k8s.io", "subjectaccessreviews", "", "", ""),
    )?;
    let body = parse_body(req)?;
    let spec = &body["spec"];
    let groups: Vec<String> = spec["groups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let user = User::named(
        spec["user"].as_str().unwrap_or_default(),
        spec["uid"].as_str().unwrap_or_default(),
        groups,
    );
    let attrs = attrs_from_spec(spec)?;
    let status = review_status(state, &user, &attrs);
    Ok((
        201,
        json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null}, "spec": spec, "status": status}),
    ))
}

/// `POST /apis/authentication.k8s.io/{v1,v1beta1}/selfsubjectreviews` (`kubectl auth whoami`):
/// the caller's user info, after impersonation.
pub(crate) fn self_subject_review(
    state: &State,
    req: &Req,
    version: &str,
) -> Result<(u16, Value), ApiError> {
    authorize(
        state,
        &req.user,
        create_attrs("authentication.k8s.io", "selfsubjectreviews", "", "", ""),
    )?;
    let u = &req.user;
    let mut info = json!({"username": u.name});
    if !u.uid.is_empty() {
        info["uid"] = json!(u.uid);
    }
    if !u.groups.is_empty() {
        info["groups"] = json!(u.groups);
    }
    if !u.extra.is_empty() {
        info["extra"] = json!(u.extra);
    }
    Ok((
        201,
        json!({"kind": "SelfSubjectReview", "apiVersion": format!("authentication.k8s.io/{version}"),
        "metadata": {"creationTimestamp": null}, "status": {"userInfo": info}}),
    ))
}
