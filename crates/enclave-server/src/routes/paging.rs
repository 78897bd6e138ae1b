//! Pages of the platform plane's tenant listings.

use enclave_core::TenantId;

use crate::{ApiError, ApiResult};

/// `limit` (1–100, default 20) and `cursor` (the last tenant id of the
/// previous page) of a page of tenants.
pub(crate) fn tenant_page(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> ApiResult<(u32, Option<TenantId>)> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit: must be between 1 and 100"));
    }
    let after = match cursor {
        None | Some("") => None,
        Some(c) => Some(
            TenantId::parse(c)
                .map_err(|_| ApiError::invalid("cursor: not a cursor this server issued"))?,
        ),
    };
    Ok((limit, after))
}
