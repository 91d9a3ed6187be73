//! Microsoft Graph v1.0 calls: applications, their service principal, and application FICs.

use azure_core::http::Method;
use uuid::Uuid;

use crate::arm::check_fic_name;
use crate::client::{AzureClient, build_url, call, expect_json, invalid};
use crate::error::{AzureError, Operation};
use crate::limiter::Budget;
use crate::models::{
    AppRegistration, Application, Fic, FicRequest, GraphPage, ServicePrincipal, WireApplication,
    WireGraphFic, WireGraphPrincipal,
};
use crate::rest::Api;

const VERSION: &str = "v1.0";
const FICS: &str = "federatedIdentityCredentials";
const SELECT: (&str, &str) = ("$select", "id,appId,displayName");
/// Graph's largest page of directory objects (the default is 100).
const MAX_PAGE: (&str, &str) = ("$top", "999");

impl AzureClient {
    /// The app registration with object ID `object_id`, if any.
    pub async fn get_application(
        &self,
        object_id: &Uuid,
    ) -> Result<Option<Application>, AzureError> {
        let op = Operation::GetApplication;
        let target = format!("application {object_id}");
        let id = object_id.to_string();
        let url = self.graph_url(op, ["applications", id.as_str()], &[SELECT])?;
        let call = call(op, Api::Graph, Budget::Graph, Method::Get, url, &target);
        let reply = self.rest().send(&call).await?;
        match reply.status {
            404 => Ok(None),
            _ => expect_json::<WireGraphPrincipal>(&reply, &call, &[200]).map(|w| Some(w.into())),
        }
    }

    /// The service principal of application `app_id` in this tenant
    /// (`GET /servicePrincipals(appId='...')`), if any.
    pub async fn service_principal_of_app(
        &self,
        app_id: &Uuid,
    ) -> Result<Option<ServicePrincipal>, AzureError> {
        let op = Operation::GetServicePrincipal;
        let target = format!("service principal of application {app_id}");
        let segment = format!("servicePrincipals(appId='{app_id}')");
        let url = self.graph_url(op, [segment.as_str()], &[SELECT])?;
        let call = call(op, Api::Graph, Budget::Graph, Method::Get, url, &target);
        let reply = self.rest().send(&call).await?;
        match reply.status {
            404 => Ok(None),
            _ => expect_json::<WireGraphPrincipal>(&reply, &call, &[200]).map(|w| Some(w.into())),
        }
    }

    /// The service principal with object ID `object_id` (`GET /servicePrincipals/{id}`, with
    /// `servicePrincipalType`), if any: a managed identity's or an application's.
    pub async fn get_service_principal(
        &self,
        object_id: &Uuid,
    ) -> Result<Option<ServicePrincipal>, AzureError> {
        let op = Operation::GetServicePrincipal;
        let target = format!("service principal {object_id}");
        let id = object_id.to_string();
        let url = self.graph_url(
            op,
            ["servicePrincipals", id.as_str()],
            &[("$select", "id,appId,displayName,servicePrincipalType")],
        )?;
        let call = call(op, Api::Graph, Budget::Graph, Method::Get, url, &target);
        let reply = self.rest().send(&call).await?;
        match reply.status {
            404 => Ok(None),
            _ => expect_json::<WireGraphPrincipal>(&reply, &call, &[200]).map(|w| Some(w.into())),
        }
    }

    /// Every app registration the caller may read, with the metadata of its client secrets
    /// and certificates (`GET /applications?$select=…,passwordCredentials,keyCredentials`),
    /// following `@odata.nextLink`. Needs `Application.Read.All` (or `Directory.Read.All`).
    pub async fn list_applications(&self) -> Result<Vec<AppRegistration>, AzureError> {
        let op = Operation::ListApplications;
        let target = "applications".to_owned();
        let url = self.graph_url(
            op,
            ["applications"],
            &[
                (
                    "$select",
                    "id,appId,displayName,passwordCredentials,keyCredentials",
                ),
                MAX_PAGE,
            ],
        )?;
        let call = call(op, Api::Graph, Budget::Graph, Method::Get, url, &target);
        self.list_all(call, |page: GraphPage<WireApplication>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    /// Creates a FIC on an application (`POST .../federatedIdentityCredentials`). If one with this
    /// name exists already (409), it is read back and returned when it trusts the same issuer,
    /// subject and audiences; otherwise the 409 is returned as terminal.
    pub async fn put_app_fic(
        &self,
        app_object_id: &Uuid,
        fic: &FicRequest,
    ) -> Result<Fic, AzureError> {
        let op = Operation::PutAppFic;
        check_fic_name(op, &fic.name)?;
        if fic.audiences.is_empty() {
            return Err(invalid(op, "audiences is empty"));
        }
        let target = format!(
            "federated credential {} on application {app_object_id}",
            fic.name
        );
        let app = app_object_id.to_string();
        let url = self.graph_url(op, ["applications", app.as_str(), FICS], &[])?;
        let mut call = call(op, Api::Graph, Budget::Graph, Method::Post, url, &target);
        call.body = Some(
            serde_json::to_vec(&WireGraphFic::request(fic))
                .map_err(|e| invalid(op, format!("request body: {e}")))?,
        );
        let call = &call;
        // Ok(Err(conflict)) is a 409, settled below, outside the application's lock.
        let created = self
            .fic_write(&app_lock_key(app_object_id), call, |reply| {
                if reply.status == 409 {
                    return Ok(Err(reply.failure(call)));
                }
                expect_json::<WireGraphFic>(&reply, call, &[200, 201]).map(|w| Ok(w.into()))
            })
            .await?;
        let conflict = match created {
            Ok(fic) => return Ok(fic),
            Err(conflict) => conflict,
        };
        let code = conflict.code().unwrap_or("Conflict").to_owned();
        match self.get_app_fic(app_object_id, &fic.name).await? {
            Some(existing) if existing.matches(fic) => Ok(existing),
            Some(existing) => Err(AzureError::Terminal {
                operation: op,
                status: 409,
                code,
                message: format!(
                    "{}: a credential with this name already trusts issuer `{}`, subject `{}`",
                    call.target, existing.issuer, existing.subject
                ),
            }),
            // Deleted between the POST and the GET: let the caller try again.
            None => Err(AzureError::Retryable {
                operation: op,
                status: Some(409),
                code,
                message: format!("{}: conflicted on create, then vanished", call.target),
            }),
        }
    }

    /// `GET /applications/{id}/federatedIdentityCredentials/{name}` (Graph accepts the name in
    /// place of the ID).
    async fn get_app_fic(
        &self,
        app_object_id: &Uuid,
        name: &str,
    ) -> Result<Option<Fic>, AzureError> {
        let op = Operation::PutAppFic;
        let target = format!("federated credential {name} on application {app_object_id}");
        let app = app_object_id.to_string();
        let url = self.graph_url(op, ["applications", app.as_str(), FICS, name], &[])?;
        let call = call(op, Api::Graph, Budget::Graph, Method::Get, url, &target);
        let reply = self.rest().send(&call).await?;
        match reply.status {
            404 => Ok(None),
            _ => expect_json::<WireGraphFic>(&reply, &call, &[200]).map(|w| Some(w.into())),
        }
    }

    /// Deletes an application FIC by name: `Ok(true)` if it existed (204), `Ok(false)` if not
    /// (404).
    pub async fn delete_app_fic(
        &self,
        app_object_id: &Uuid,
        name: &str,
    ) -> Result<bool, AzureError> {
        let op = Operation::DeleteAppFic;
        check_fic_name(op, name)?;
        let target = format!("federated credential {name} on application {app_object_id}");
        let app = app_object_id.to_string();
        let url = self.graph_url(op, ["applications", app.as_str(), FICS, name], &[])?;
        let call = call(op, Api::Graph, Budget::Graph, Method::Delete, url, &target);
        let call = &call;
        self.fic_write(&app_lock_key(app_object_id), call, |reply| {
            match reply.status {
                200 | 204 => Ok(true),
                404 => Ok(false),
                _ => Err(reply.failure(call)),
            }
        })
        .await
    }

    /// Every FIC on an application, following `@odata.nextLink`.
    pub async fn list_app_fics(&self, app_object_id: &Uuid) -> Result<Vec<Fic>, AzureError> {
        let op = Operation::ListAppFics;
        let target = format!("federated credentials on application {app_object_id}");
        let app = app_object_id.to_string();
        let url = self.graph_url(op, ["applications", app.as_str(), FICS], &[])?;
        let call = call(op, Api::Graph, Budget::Graph, Method::Get, url, &target);
        self.list_all(call, |page: GraphPage<WireGraphFic>| {
            (
                page.value.into_iter().map(Into::into).collect(),
                page.next_link,
            )
        })
        .await
    }

    fn graph_url<'a>(
        &self,
        op: Operation,
        segments: impl IntoIterator<Item = &'a str>,
        query: &[(&str, &str)],
    ) -> Result<url::Url, AzureError> {
        build_url(
            &self.endpoints().graph,
            std::iter::once(VERSION).chain(segments),
            query,
        )
        .ok_or_else(|| invalid(op, "the Graph endpoint cannot take a path"))
    }
}

fn app_lock_key(app_object_id: &Uuid) -> String {
    format!("graph:{app_object_id}")
}
