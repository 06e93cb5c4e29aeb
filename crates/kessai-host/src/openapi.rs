//! The OpenAPI 3.1 document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{admin, system};

/// Adds the admin bearer-token security scheme.
#[derive(Debug)]
struct AdminAuth;

impl Modify for AdminAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "kessai issuer host",
        description = "Secure card settlement: issuer host API. Errors are RFC 9457 problem details \
                       (application/problem+json). Every state-changing call requires an \
                       Idempotency-Key header: the same key with the same request replays the first \
                       response; with a different request it is refused with 422; while the first is \
                       still running, 409.",
    ),
    paths(
        system::health, system::openapi, system::metrics,
        admin::create_merchant, admin::list_merchants, admin::get_merchant,
        admin::rotate_merchant_key, admin::set_merchant_status,
        admin::create_cardholder, admin::get_cardholder,
        admin::create_account, admin::get_account,
        admin::create_transfer, admin::resolve_transfer,
        admin::list_keys, admin::rotate_key,
    ),
    components(schemas(crate::problem::Problem)),
    modifiers(&AdminAuth),
    tags((name = "system", description = "Health, API description, metrics"),
         (name = "admin", description = "Issuer administration (bearer admin token)")),
)]
pub struct ApiDoc;

/// The full document: the core API plus every flow's routes.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::routes::flow_a::Api::openapi());
    doc.merge(crate::routes::flow_b::Api::openapi());
    doc.merge(crate::routes::flow_c::Api::openapi());
    doc.merge(crate::routes::flow_d::Api::openapi());
    doc
}
