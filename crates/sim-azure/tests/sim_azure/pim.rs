//! PIM for Azure resources (2020-10-01): role assignment schedule requests, schedules and
//! instances, the role assignments they make, and PIM's clock ending them. Sources: the
//! vendored 2020-10-01 swaggers (shapes, validated here), Azure's answers
//! `ActiveDurationTooShort` "The Active duration is too short. Minimum Required is 5 minutes."
//! and `AadPremiumLicenseRequired` "The tenant needs an AAD Premium 2 license.", and Microsoft
//! Learn's PIM documentation (no removal within five minutes of the start).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use lapse_sim_azure::{Config, PIM_EXPIRY_ORIGIN, Seed};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::contract::{Docs, specs_root, validate};

const PIM_API: &str = "2020-10-01";
const SWAGGERS: &str =
    "specification/authorization/resource-manager/Microsoft.Authorization/stable/2020-10-01";
const TOO_SHORT: &str = "The Active duration is too short. Minimum Required is 5 minutes.";

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn requests_url(scope: &str, name: Option<&str>) -> String {
    let tail = name.map(|n| format!("/{n}")).unwrap_or_default();
    format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignmentScheduleRequests{tail}?api-version={PIM_API}"
    )
}

fn schedules_url(scope: &str, filter: Option<&str>) -> String {
    let mut url = format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignmentSchedules?api-version={PIM_API}"
    );
    if let Some(f) = filter {
        url.push_str(&format!("&$filter={f}"));
    }
    url
}

fn instances_url(scope: &str) -> String {
    format!(
        "{scope}/providers/Microsoft.Authorization/roleAssignmentScheduleInstances?api-version={PIM_API}"
    )
}

/// A request body; `end: None` sends no expiration (what a removal sends).
fn body(kind: &str, principal: &str, role: &str, end: Option<DateTime<Utc>>) -> Value {
    let mut props = json!({
        "principalId": principal,
        "roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{role}"),
        "requestType": kind,
        "justification": "lapse grant payments/backup",
    });
    if let Some(e) = end {
        props["scheduleInfo"] =
            json!({"expiration": {"type": "AfterDateTime", "endDateTime": rfc3339(e)}});
    }
    json!({ "properties": props })
}

fn schema_errors(file: &str, definition: &str, value: &Value) -> Vec<String> {
    let mut docs = Docs(BTreeMap::new());
    let mut errors = Vec::new();
    validate(
        &mut docs,
        &specs_root().join(format!("{SWAGGERS}/{file}")),
        &json!({ "$ref": definition }),
        value,
        "$",
        &mut errors,
    );
    errors
}

struct Pim {
    env: Env,
    token: String,
    principal: String,
}

impl Pim {
    async fn start(config: Config) -> Pim {
        let env = Env::start(config, Seed::sandbox_default()).await;
        let token = env.operator_token().await;
        let (_, principal, _) = env.sim.identity("backup-runner").unwrap();
        Pim {
            env,
            token,
            principal,
        }
    }

    async fn sandbox() -> Pim {
        Self::start(Config::default()).await
    }

    async fn put(&self, scope: &str, name: &str, body: Value) -> Resp {
        self.env
            .arm(
                Method::PUT,
                &requests_url(scope, Some(name)),
                &self.token,
                Some(body),
            )
            .await
    }

    async fn get(&self, url: &str) -> Resp {
        self.env.arm(Method::GET, url, &self.token, None).await
    }

    async fn assign(&self, scope: &str, end: DateTime<Utc>) -> Resp {
        let r = self
            .put(
                scope,
                &guid(),
                body("AdminAssign", &self.principal, READER, Some(end)),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r
    }

    async fn remove(&self, scope: &str) -> Resp {
        self.put(
            scope,
            &guid(),
            body("AdminRemove", &self.principal, READER, None),
        )
        .await
    }

    fn sub(&self) -> String {
        format!("/subscriptions/{}", self.env.sub())
    }

    /// Every page of a schedule list.
    async fn schedules(&self, scope: &str, filter: Option<&str>) -> Vec<Value> {
        let mut url = schedules_url(scope, filter);
        let mut out = Vec::new();
        loop {
            let r = self.get(&url).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            out.extend(r.body["value"].as_array().unwrap().iter().cloned());
            match r.body.get("nextLink").and_then(Value::as_str) {
                Some(next) => url = next.strip_prefix(self.env.sim.url()).unwrap().to_owned(),
                None => return out,
            }
        }
    }

    async fn instances(&self, scope: &str) -> Vec<Value> {
        let r = self.get(&instances_url(scope)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body["value"].as_array().unwrap().clone()
    }

    /// Whether the identity can read the storage account (RBAC through the new assignment).
    async fn identity_reads_the_account(&self) -> bool {
        let token = self
            .env
            .sim
            .mint_access_token(&self.principal, "https://management.azure.com")
            .unwrap();
        let url = format!("{}?api-version=2023-01-01", self.env.account_scope());
        let r = self.env.arm(Method::GET, &url, &token, None).await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::FORBIDDEN,
            "{} {}",
            r.status,
            r.body
        );
        r.status == StatusCode::OK
    }
}

#[tokio::test]
async fn admin_assign_makes_a_schedule_an_instance_and_a_role_assignment() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    assert!(!p.identity_reads_the_account().await);
    let end = Utc::now() + chrono::Duration::hours(1);
    let name = guid();
    let created = p
        .put(
            &rg,
            &name,
            body("AdminAssign", &p.principal, READER, Some(end)),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let operator = p.env.sim.operator_credentials().unwrap().object_id;
    let props = &created.body["properties"];
    let request_id =
        format!("{rg}/providers/Microsoft.Authorization/RoleAssignmentScheduleRequests/{name}");
    assert_eq!(created.body["id"], request_id.as_str());
    assert_eq!(created.body["name"], name.as_str());
    assert_eq!(
        created.body["type"],
        "Microsoft.Authorization/RoleAssignmentScheduleRequests"
    );
    assert_eq!(props["requestType"], "AdminAssign");
    assert_eq!(props["status"], "Provisioned");
    assert_eq!(props["scope"], rg.as_str());
    assert_eq!(props["principalId"], p.principal.as_str());
    assert_eq!(props["principalType"], "ServicePrincipal");
    assert_eq!(props["requestorId"], operator.as_str());
    assert_eq!(props["justification"], "lapse grant payments/backup");
    assert_eq!(
        props["roleDefinitionId"],
        format!(
            "/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/{READER}",
            p.env.sub()
        )
    );
    assert_eq!(props["scheduleInfo"]["expiration"]["type"], "AfterDateTime");
    let errors = schema_errors(
        "RoleAssignmentScheduleRequest.json",
        "#/definitions/RoleAssignmentScheduleRequest",
        &created.body,
    );
    assert!(errors.is_empty(), "{errors:?}");

    let read = p.get(&requests_url(&rg, Some(&name))).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body, created.body);
    let listed = p.get(&requests_url(&p.sub(), None)).await;
    assert_eq!(listed.body["value"].as_array().unwrap().len(), 1);

    // The schedule, seen from the subscription (it is below it).
    let schedules = p.schedules(&p.sub(), None).await;
    assert_eq!(schedules.len(), 1, "{schedules:?}");
    let s = &schedules[0];
    assert_eq!(
        props["targetRoleAssignmentScheduleId"], s["id"],
        "the request names the schedule it made"
    );
    assert_eq!(
        s["properties"]["roleAssignmentScheduleRequestId"],
        request_id.as_str()
    );
    assert_eq!(s["properties"]["assignmentType"], "Assigned");
    assert_eq!(s["properties"]["memberType"], "Direct");
    assert_eq!(s["properties"]["status"], "Provisioned");
    let ends_at = |v: &Value| {
        DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    assert_eq!(ends_at(&s["properties"]["endDateTime"]), end.timestamp());
    let errors = schema_errors(
        "RoleAssignmentSchedule.json",
        "#/definitions/RoleAssignmentSchedule",
        s,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let by_name = p
        .get(&format!(
            "{rg}/providers/Microsoft.Authorization/roleAssignmentSchedules/{}?api-version={PIM_API}",
            s["name"].as_str().unwrap()
        ))
        .await;
    assert_eq!(by_name.body, *s);

    // Its instance points at the role assignment, which the 2022-04-01 API serves.
    let instances = p.instances(&rg).await;
    assert_eq!(instances.len(), 1);
    let i = &instances[0];
    assert_eq!(i["properties"]["roleAssignmentScheduleId"], s["id"]);
    let errors = schema_errors(
        "RoleAssignmentScheduleInstance.json",
        "#/definitions/RoleAssignmentScheduleInstance",
        i,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let origin = i["properties"]["originRoleAssignmentId"].as_str().unwrap();
    assert_eq!(
        origin,
        format!(
            "{rg}/providers/Microsoft.Authorization/roleAssignments/{}",
            i["name"].as_str().unwrap()
        )
    );
    let ra = p.get(&format!("{origin}?api-version={RA_API}")).await;
    assert_eq!(ra.status, StatusCode::OK, "{}", ra.body);
    assert_eq!(ra.body["properties"]["principalId"], p.principal.as_str());
    assert_eq!(ra.body["properties"]["description"], Value::Null);
    assert_eq!(ra.body["properties"]["principalType"], "ServicePrincipal");
    let all = p
        .get(&format!(
            "{}/providers/Microsoft.Authorization/roleAssignments?api-version={RA_API}&$filter=principalId eq '{}'",
            p.sub(),
            p.principal
        ))
        .await;
    assert_eq!(
        all.body["value"].as_array().unwrap().len(),
        1,
        "{}",
        all.body
    );
    assert!(p.identity_reads_the_account().await);
}

#[tokio::test]
async fn schedules_shorter_than_five_minutes_are_refused_and_nothing_changes() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    let now = Utc::now();
    let short = p
        .put(
            &rg,
            &guid(),
            body(
                "AdminAssign",
                &p.principal,
                READER,
                Some(now + chrono::Duration::minutes(4)),
            ),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST, "{}", short.body);
    assert_eq!(short.code(), "ActiveDurationTooShort");
    assert_eq!(short.body["error"]["message"], TOO_SHORT);
    let mut by_duration = body("AdminAssign", &p.principal, READER, None);
    by_duration["properties"]["scheduleInfo"] = json!({
        "startDateTime": rfc3339(now),
        "expiration": {"type": "AfterDuration", "duration": "PT4M59S"},
    });
    let name = guid();
    let short = p.put(&rg, &name, by_duration.clone()).await;
    assert_eq!(short.code(), "ActiveDurationTooShort", "{}", short.body);
    let absent = p.get(&requests_url(&rg, Some(&name))).await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND);
    assert_eq!(absent.code(), "RoleAssignmentScheduleRequestNotFound");
    assert!(p.schedules(&p.sub(), None).await.is_empty());
    assert!(
        p.env
            .sim
            .role_assignments()
            .iter()
            .all(|a| a.principal_id != p.principal)
    );
    // Five minutes exactly is enough.
    by_duration["properties"]["scheduleInfo"]["expiration"]["duration"] = json!("PT5M");
    let ok = p.put(&rg, &guid(), by_duration).await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.body);
}

#[tokio::test]
async fn removal_within_five_minutes_of_the_start_is_refused_then_accepted() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    let created = p.assign(&rg, Utc::now() + chrono::Duration::hours(1)).await;
    let start = created.body["properties"]["scheduleInfo"]["startDateTime"]
        .as_str()
        .unwrap()
        .to_owned();
    let early = p.remove(&rg).await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST, "{}", early.body);
    assert_eq!(early.code(), "ActiveDurationTooShort");
    let message = early.body["error"]["message"].as_str().unwrap();
    let earliest = DateTime::parse_from_rfc3339(&start).unwrap() + chrono::Duration::minutes(5);
    assert!(
        message.contains("within 5 minutes of its start")
            && message.contains(
                &earliest
                    .with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Micros, true)
            ),
        "{message}"
    );
    assert_eq!(p.instances(&rg).await.len(), 1);

    p.env.sim.set_pim_clock_offset(Duration::from_secs(6 * 60));
    let name = guid();
    let removed = p
        .put(&rg, &name, body("AdminRemove", &p.principal, READER, None))
        .await;
    assert_eq!(removed.status, StatusCode::CREATED, "{}", removed.body);
    assert_eq!(removed.body["properties"]["requestType"], "AdminRemove");
    assert_eq!(removed.body["properties"]["status"], "Revoked");
    let errors = schema_errors(
        "RoleAssignmentScheduleRequest.json",
        "#/definitions/RoleAssignmentScheduleRequest",
        &removed.body,
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert!(p.schedules(&p.sub(), None).await.is_empty());
    assert!(p.instances(&p.sub()).await.is_empty());
    assert!(
        p.env
            .sim
            .role_assignments()
            .iter()
            .all(|a| a.principal_id != p.principal)
    );
    // Nothing left to remove.
    let again = p.remove(&rg).await;
    assert_eq!(again.code(), "RoleAssignmentDoesNotExist", "{}", again.body);
    assert_eq!(
        again.body["error"]["message"],
        "The Role assignment does not exist."
    );
}

#[tokio::test]
async fn extend_and_update_move_the_end() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    let now = Utc::now();
    p.assign(&rg, now + chrono::Duration::hours(1)).await;
    let ends = |s: &Value| {
        DateTime::parse_from_rfc3339(s["properties"]["endDateTime"].as_str().unwrap())
            .unwrap()
            .timestamp()
    };
    for (kind, end) in [
        ("AdminExtend", now + chrono::Duration::hours(2)),
        ("AdminUpdate", now + chrono::Duration::minutes(30)),
    ] {
        let name = guid();
        let r = p
            .put(&rg, &name, body(kind, &p.principal, READER, Some(end)))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{kind}: {}", r.body);
        assert_eq!(r.body["properties"]["status"], "Provisioned");
        let s = p.schedules(&rg, None).await.remove(0);
        assert_eq!(ends(&s), end.timestamp(), "{kind}");
        assert_eq!(
            s["properties"]["roleAssignmentScheduleRequestId"], r.body["id"],
            "{kind}"
        );
        assert_eq!(
            r.body["properties"]["targetRoleAssignmentScheduleId"],
            s["id"]
        );
        assert_ne!(s["properties"]["updatedOn"], s["properties"]["createdOn"]);
        let i = p.instances(&rg).await.remove(0);
        assert_eq!(ends(&i), end.timestamp(), "{kind}: the instance too");
    }
    // The five minutes count from the schedule's start.
    let short = p
        .put(
            &rg,
            &guid(),
            body(
                "AdminUpdate",
                &p.principal,
                READER,
                Some(now + chrono::Duration::minutes(3)),
            ),
        )
        .await;
    assert_eq!(short.code(), "ActiveDurationTooShort", "{}", short.body);
    // Nothing to extend for another role.
    let absent = p
        .put(
            &rg,
            &guid(),
            body(
                "AdminExtend",
                &p.principal,
                "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
                Some(now + chrono::Duration::hours(3)),
            ),
        )
        .await;
    assert_eq!(absent.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        absent.code(),
        "RoleAssignmentDoesNotExist",
        "{}",
        absent.body
    );
}

#[tokio::test]
async fn removal_under_a_lock_is_scope_locked_like_a_delete() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    p.assign(&rg, Utc::now() + chrono::Duration::hours(1)).await;
    let lock = p
        .env
        .arm(
            Method::PUT,
            &format!("{rg}/providers/Microsoft.Authorization/locks/keep?api-version=2016-09-01"),
            &p.token,
            Some(json!({"properties": {"level": "CanNotDelete"}})),
        )
        .await;
    assert_eq!(lock.status, StatusCode::CREATED, "{}", lock.body);
    p.env.sim.set_pim_clock_offset(Duration::from_secs(6 * 60));
    let removal = p.remove(&rg).await;
    assert_eq!(removal.status, StatusCode::CONFLICT, "{}", removal.body);
    assert_eq!(removal.code(), "ScopeLocked");
    let origin = p.instances(&rg).await[0]["properties"]["originRoleAssignmentId"]
        .as_str()
        .unwrap()
        .to_owned();
    let delete = p
        .env
        .arm(
            Method::DELETE,
            &format!("{origin}?api-version={RA_API}"),
            &p.token,
            None,
        )
        .await;
    assert_eq!(delete.status, StatusCode::CONFLICT);
    assert_eq!(removal.body, delete.body, "the same answer as a DELETE");
    assert_eq!(p.instances(&rg).await.len(), 1, "nothing changed");

    // A ReadOnly lock refuses an assignment as it refuses a role assignment PUT.
    let other = p.env.account_scope();
    let read_only = p
        .env
        .arm(
            Method::PUT,
            &format!(
                "{other}/providers/Microsoft.Authorization/locks/frozen?api-version=2016-09-01"
            ),
            &p.token,
            Some(json!({"properties": {"level": "ReadOnly"}})),
        )
        .await;
    assert_eq!(read_only.status, StatusCode::CREATED, "{}", read_only.body);
    let refused = p
        .put(
            &other,
            &guid(),
            body(
                "AdminAssign",
                &p.principal,
                READER,
                Some(Utc::now() + chrono::Duration::hours(1)),
            ),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(refused.code(), "ScopeLocked");
}

#[tokio::test]
async fn an_unlicensed_tenant_answers_aad_premium_license_required_on_every_operation() {
    let p = Pim::start(Config {
        pim_licensed: false,
        ..Config::default()
    })
    .await;
    let rg = p.env.rg_scope();
    let name = guid();
    let end = Utc::now() + chrono::Duration::hours(1);
    let check = |r: Resp, what: &str| {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.body);
        assert_eq!(
            r.body,
            json!({"error": {"code": "AadPremiumLicenseRequired", "message": "The tenant needs an AAD Premium 2 license."}}),
            "{what}"
        );
    };
    check(
        p.put(
            &rg,
            &name,
            body("AdminAssign", &p.principal, READER, Some(end)),
        )
        .await,
        "PUT",
    );
    check(p.get(&requests_url(&rg, Some(&name))).await, "GET request");
    check(p.get(&requests_url(&rg, None)).await, "list requests");
    check(
        p.env
            .arm(
                Method::POST,
                &requests_url(&rg, Some(&format!("{name}/cancel"))),
                &p.token,
                None,
            )
            .await,
        "cancel",
    );
    check(p.get(&schedules_url(&rg, None)).await, "list schedules");
    check(
        p.get(&format!(
            "{rg}/providers/Microsoft.Authorization/roleAssignmentSchedules/{name}?api-version={PIM_API}"
        ))
        .await,
        "GET schedule",
    );
    check(p.get(&instances_url(&rg)).await, "list instances");
    check(
        p.get(&format!(
            "{rg}/providers/Microsoft.Authorization/roleAssignmentScheduleInstances/{name}?api-version={PIM_API}"
        ))
        .await,
        "GET instance",
    );
    // Licensed at runtime, then unlicensed again through the admin API.
    p.env.sim.set_pim_licensed(true);
    p.assign(&rg, end).await;
    let admin = p
        .env
        .http
        .put(format!("{}/admin/pim", p.env.sim.url()))
        .json(&json!({"licensed": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::NO_CONTENT);
    check(
        p.get(&schedules_url(&rg, None)).await,
        "after the admin API",
    );
}

#[tokio::test]
async fn admin_assign_is_refused_when_the_role_assignment_exists() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    let plain = p
        .env
        .put_assignment(&p.token, &rg, &guid(), &p.principal, READER, None)
        .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.body);
    // The same scope in other letters is the same scope.
    let shouted = rg.replace("lapse-demo-rg", "LAPSE-DEMO-RG");
    let end = Utc::now() + chrono::Duration::hours(1);
    let exists = p
        .put(
            &shouted,
            &guid(),
            body("AdminAssign", &p.principal, READER, Some(end)),
        )
        .await;
    assert_eq!(exists.status, StatusCode::BAD_REQUEST, "{}", exists.body);
    assert_eq!(
        exists.body["error"],
        json!({"code": "RoleAssignmentExists", "message": "The Role assignment already exists."})
    );
    // A schedule-made one, too.
    let account = p.env.account_scope();
    p.assign(&account, end).await;
    let again = p
        .put(
            &account,
            &guid(),
            body("AdminAssign", &p.principal, READER, Some(end)),
        )
        .await;
    assert_eq!(again.code(), "RoleAssignmentExists", "{}", again.body);
}

#[tokio::test]
async fn a_re_put_answers_the_stored_request_and_another_body_is_refused() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    let name = guid();
    let end = Utc::now() + chrono::Duration::hours(1);
    let b = body("AdminAssign", &p.principal, READER, Some(end));
    let first = p.put(&rg, &name, b.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = p.put(&rg, &name, b).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(first.body, second.body);
    assert_eq!(p.schedules(&rg, None).await.len(), 1);
    let other = p
        .put(
            &rg,
            &name,
            body(
                "AdminAssign",
                &p.principal,
                READER,
                Some(end + chrono::Duration::hours(1)),
            ),
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        other.body["error"],
        json!({"code": "InvalidRoleAssignmentRequest", "message": format!("A request with name {name} exists with other properties.")})
    );
    let s = p.schedules(&rg, None).await.remove(0);
    assert_eq!(
        DateTime::parse_from_rfc3339(s["properties"]["endDateTime"].as_str().unwrap())
            .unwrap()
            .timestamp(),
        end.timestamp(),
        "nothing changed"
    );
}

#[tokio::test]
async fn pim_removes_an_ended_assignment_and_the_audit_log_says_so() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    p.assign(&rg, Utc::now() + chrono::Duration::minutes(10))
        .await;
    let origin = p.instances(&rg).await[0]["properties"]["originRoleAssignmentId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(p.identity_reads_the_account().await);
    p.env.sim.set_pim_clock_offset(Duration::from_secs(11 * 60));
    assert!(p.schedules(&p.sub(), None).await.is_empty());
    assert!(p.instances(&p.sub()).await.is_empty());
    let gone = p.get(&format!("{origin}?api-version={RA_API}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
    assert!(!p.identity_reads_the_account().await);
    let expiries: Vec<_> = p
        .env
        .sim
        .audit()
        .entries()
        .into_iter()
        .filter(|e| e.origin.is_some())
        .collect();
    assert_eq!(expiries.len(), 1, "{expiries:?}");
    let e = &expiries[0];
    assert_eq!(e.origin.as_deref(), Some(PIM_EXPIRY_ORIGIN));
    assert_eq!(e.origin.as_deref(), Some("pim-expiry"));
    assert_eq!(e.method, "DELETE");
    assert_eq!(e.path, origin);
    assert_eq!(e.principal, None);
    assert_eq!(e.status, 200);
    // The admin API shows it the same way; ordinary entries carry no `origin`.
    let log: Value = p
        .env
        .http
        .get(format!("{}/admin/audit", p.env.sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = log.as_array().unwrap();
    let shown: Vec<&Value> = log.iter().filter(|e| e.get("origin").is_some()).collect();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["origin"], "pim-expiry");
    assert_eq!(shown[0]["principal"], Value::Null);
}

#[tokio::test]
async fn the_ticker_ends_schedules_while_nobody_asks() {
    // A one-second minimum lets Azure's own expiry be watched in real time.
    let p = Pim::start(Config {
        pim_minimum_duration: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    let rg = p.env.rg_scope();
    let mut b = body("AdminAssign", &p.principal, READER, None);
    b["properties"]["scheduleInfo"] =
        json!({"expiration": {"type": "AfterDuration", "duration": "PT2S"}});
    let r = p.put(&rg, &guid(), b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // No request is made while waiting: only the ticker can remove it.
    let audit = p.env.sim.audit();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if audit
            .entries()
            .iter()
            .any(|e| e.origin.as_deref() == Some(PIM_EXPIRY_ORIGIN))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PIM did not end the schedule"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        p.env
            .sim
            .role_assignments()
            .iter()
            .all(|a| a.principal_id != p.principal)
    );
}

#[tokio::test]
async fn a_future_start_gets_its_role_assignment_at_the_start() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    let now = Utc::now();
    let mut b = body(
        "AdminAssign",
        &p.principal,
        READER,
        Some(now + chrono::Duration::hours(1)),
    );
    b["properties"]["scheduleInfo"]["startDateTime"] =
        json!(rfc3339(now + chrono::Duration::minutes(10)));
    let r = p.put(&rg, &guid(), b).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let instance = p.instances(&rg).await.remove(0);
    let origin = instance["properties"]["originRoleAssignmentId"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = p.get(&format!("{origin}?api-version={RA_API}")).await;
    assert_eq!(before.status, StatusCode::NOT_FOUND, "not before its start");
    p.env.sim.set_pim_clock_offset(Duration::from_secs(11 * 60));
    let after = p.get(&format!("{origin}?api-version={RA_API}")).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
}

#[tokio::test]
async fn deleting_a_schedules_role_assignment_takes_the_schedule_with_it() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    p.assign(&rg, Utc::now() + chrono::Duration::hours(1)).await;
    let instance = p.instances(&rg).await.remove(0);
    let origin = instance["properties"]["originRoleAssignmentId"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = p
        .env
        .arm(
            Method::DELETE,
            &format!("{origin}?api-version={RA_API}"),
            &p.token,
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert!(p.schedules(&p.sub(), None).await.is_empty());
    let gone = p
        .get(&format!(
            "{rg}/providers/Microsoft.Authorization/roleAssignmentScheduleInstances/{}?api-version={PIM_API}",
            instance["name"].as_str().unwrap()
        ))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.code(), "RoleAssignmentScheduleInstanceNotFound");
    // The tuple is free again.
    p.assign(&rg, Utc::now() + chrono::Duration::hours(1)).await;
}

#[tokio::test]
async fn schedule_requests_need_the_write_action() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    let nobody = p
        .env
        .sim
        .create_principal("nobody", lapse_sim_azure::PrincipalKind::ServicePrincipal);
    let token = p
        .env
        .secret_token(&nobody.client_id, nobody.client_secret.as_deref().unwrap())
        .await;
    let denied = p
        .env
        .arm(
            Method::PUT,
            &requests_url(&rg, Some(&guid())),
            &token,
            Some(body(
                "AdminAssign",
                &p.principal,
                READER,
                Some(Utc::now() + chrono::Duration::hours(1)),
            )),
        )
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert_eq!(denied.code(), "AuthorizationFailed");
    assert_eq!(
        denied.body["error"]["message"],
        format!(
            "The client '{o}' with object id '{o}' does not have authorization to perform action 'Microsoft.Authorization/roleAssignmentScheduleRequests/write' over scope '{rg}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            o = nobody.object_id
        )
    );
    let list = p
        .env
        .arm(Method::GET, &schedules_url(&rg, None), &token, None)
        .await;
    assert_eq!(list.status, StatusCode::FORBIDDEN);
    assert!(
        list.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Microsoft.Authorization/roleAssignmentSchedules/read"),
        "{}",
        list.body
    );
}

#[tokio::test]
async fn malformed_and_unsupported_requests_are_refused() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    let end_at = Utc::now() + chrono::Duration::hours(1);
    let end = Some(end_at);
    let cases = [
        (
            "SelfActivate",
            p.principal.clone(),
            READER,
            "UnsupportedRequestType",
        ),
        (
            "AdminAssign",
            "00000000-0000-4000-8000-0000000000ff".to_owned(),
            READER,
            "PrincipalNotFound",
        ),
        (
            "AdminAssign",
            p.principal.clone(),
            "00000000-0000-4000-8000-0000000000ee",
            "RoleDefinitionDoesNotExist",
        ),
    ];
    for (kind, principal, role, code) in cases {
        let r = p.put(&rg, &guid(), body(kind, &principal, role, end)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{code}: {}", r.body);
        assert_eq!(r.code(), code, "{}", r.body);
    }
    let mut no_end = body("AdminAssign", &p.principal, READER, None);
    no_end["properties"]["scheduleInfo"] = json!({"expiration": {"type": "AfterDateTime"}});
    let r = p.put(&rg, &guid(), no_end).await;
    assert_eq!(r.code(), "InvalidRequestContent", "{}", r.body);
    let r = p
        .put(
            &rg,
            "not-a-guid",
            body("AdminAssign", &p.principal, READER, end),
        )
        .await;
    assert_eq!(
        r.code(),
        "InvalidRoleAssignmentScheduleRequestName",
        "{}",
        r.body
    );
    let r = p
        .env
        .arm(
            Method::PUT,
            &requests_url(&rg, Some(&guid())).replace(PIM_API, "2022-04-01-preview"),
            &p.token,
            Some(body("AdminAssign", &p.principal, READER, end)),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "InvalidApiVersionParameter");

    // Cancel: absent → 404; existing but never pending → 400.
    let absent = p
        .env
        .arm(
            Method::POST,
            &requests_url(&rg, Some(&format!("{}/cancel", guid()))),
            &p.token,
            None,
        )
        .await;
    assert_eq!(absent.status, StatusCode::NOT_FOUND, "{}", absent.body);
    let created = p.assign(&rg, end_at).await;
    let name = created.body["name"].as_str().unwrap();
    let cancel = p
        .env
        .arm(
            Method::POST,
            &requests_url(&rg, Some(&format!("{name}/cancel"))),
            &p.token,
            None,
        )
        .await;
    assert_eq!(cancel.status, StatusCode::BAD_REQUEST, "{}", cancel.body);
    assert_eq!(cancel.code(), "RoleAssignmentScheduleRequestNotCancellable");
    let errors = schema_errors(
        "RoleAssignmentScheduleRequest.json",
        "#/definitions/CloudError",
        &cancel.body,
    );
    assert!(errors.is_empty(), "{errors:?}");
}

#[tokio::test]
async fn lists_follow_scope_inheritance_filters_and_pages() {
    let p = Pim::start(Config {
        page_size: 1,
        ..Config::default()
    })
    .await;
    let (sub, rg) = (p.sub(), p.env.rg_scope());
    let end = Utc::now() + chrono::Duration::hours(1);
    p.assign(&rg, end).await;
    let (_, other, _) = p.env.sim.identity("report-agent").unwrap();
    let r = p
        .put(
            &sub,
            &guid(),
            body("AdminAssign", &other, READER, Some(end)),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Page by page: one each, the first with a nextLink.
    let first = p.get(&schedules_url(&sub, None)).await;
    assert_eq!(first.body["value"].as_array().unwrap().len(), 1);
    let next = first.body["nextLink"].as_str().unwrap();
    let path = next.strip_prefix(p.env.sim.url()).unwrap();
    let second = p.get(path).await;
    assert_eq!(second.body["value"].as_array().unwrap().len(), 1);
    assert!(second.body.get("nextLink").is_none(), "{}", second.body);

    let principals = |v: &[Value]| {
        let mut p: Vec<String> = v
            .iter()
            .map(|s| s["properties"]["principalId"].as_str().unwrap().to_owned())
            .collect();
        p.sort();
        p
    };
    let mut both = vec![other.clone(), p.principal.clone()];
    both.sort();
    assert_eq!(principals(&p.schedules(&sub, None).await), both);
    // At the subscription, `atScope()` leaves out the schedule below it.
    let at = p.schedules(&sub, Some("atScope()")).await;
    assert_eq!(principals(&at), vec![other.clone()]);
    // At the group, `atScope()` shows the one above it too.
    assert_eq!(principals(&p.schedules(&rg, Some("atScope()")).await), both);
    let mine = p
        .schedules(&sub, Some(&format!("principalId eq '{}'", p.principal)))
        .await;
    assert_eq!(principals(&mine), vec![p.principal.clone()]);
    let assigned = p
        .schedules(&sub, Some(&format!("assignedTo('{other}')")))
        .await;
    assert_eq!(principals(&assigned), vec![other.clone()]);
    let unsupported = p.get(&schedules_url(&sub, Some("asApprover()"))).await;
    assert_eq!(
        unsupported.code(),
        "UnsupportedQuery",
        "{}",
        unsupported.body
    );
}

/// Owner (`*`) and User Access Administrator (`Microsoft.Authorization/*`) allow schedule
/// requests, as in Azure; Role Based Access Control Administrator's actions are
/// `roleAssignments/write` and `/delete` (Microsoft's built-in roles reference), which do not.
#[tokio::test]
async fn built_in_roles_allow_schedule_requests_as_azures_do() {
    let p = Pim::sandbox().await;
    let rg = p.env.rg_scope();
    for (role, allowed) in [
        ("8e3af657-a8ff-443c-a75c-2fe8c4bcb635", true),
        ("18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", true),
        ("f58310d9-a9f6-439a-9e8d-f62e7b41a168", false),
    ] {
        let admin = p
            .env
            .sim
            .create_principal(role, lapse_sim_azure::PrincipalKind::ServicePrincipal);
        let given = p
            .env
            .put_assignment(&p.token, &rg, &guid(), &admin.object_id, role, None)
            .await;
        assert_eq!(given.status, StatusCode::CREATED, "{}", given.body);
        let token = p
            .env
            .secret_token(&admin.client_id, admin.client_secret.as_deref().unwrap())
            .await;
        // Each assigns Reader to itself: a tuple of its own.
        let r = p
            .env
            .arm(
                Method::PUT,
                &requests_url(&rg, Some(&guid())),
                &token,
                Some(body(
                    "AdminAssign",
                    &admin.object_id,
                    READER,
                    Some(Utc::now() + chrono::Duration::hours(1)),
                )),
            )
            .await;
        let expected = if allowed {
            StatusCode::CREATED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(r.status, expected, "{role}: {}", r.body);
    }
}
