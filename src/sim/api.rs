//! The Brevo endpoints the simulator serves, as plain functions from a
//! parsed request to a [`Reply`], over the simulated [`Account`]. Auth, faults
//! and rate limits are applied before these run (see `sim/mod.rs`).

use std::collections::BTreeSet;

use axum::http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::account::{Account, AttributeType, Duplicate, Ident, ImportReport};
use super::validate::{self as v, invalid, missing, Invalid};

/// A response before the rate-limit headers are added.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Option<Value>,
}

impl Reply {
    pub fn json(status: StatusCode, body: Value) -> Reply {
        Reply { status, body: Some(body) }
    }
    pub fn empty(status: StatusCode) -> Reply {
        Reply { status, body: None }
    }
    /// Brevo's error model: `{"code": ..., "message": ...}`.
    pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
        Reply::json(status, json!({"code": code, "message": message.into()}))
    }
    fn not_found(message: impl Into<String>) -> Reply {
        Reply::error(StatusCode::NOT_FOUND, "document_not_found", message)
    }
}

impl From<Invalid> for Reply {
    fn from(e: Invalid) -> Reply {
        Reply::error(StatusCode::BAD_REQUEST, e.code, e.message)
    }
}

impl From<Duplicate> for Reply {
    fn from(d: Duplicate) -> Reply {
        Reply::json(
            StatusCode::BAD_REQUEST,
            json!({
                "code": "duplicate_parameter",
                "message": format!("{} is already associated with another Contact", d.field),
                "metadata": {"duplicate_identifiers": [d.field]},
            }),
        )
    }
}

/// One custom event the simulator accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AcceptedEvent {
    /// `seq` of the recorded request that carried it.
    pub request: u64,
    /// Position in the batch (0 for `POST /v3/events`).
    pub index: usize,
    /// The contact the event was attributed to, if one was found or created.
    pub contact_id: Option<u64>,
    /// The event exactly as sent.
    pub event: Value,
}

/// What an endpoint may touch.
pub struct Ctx<'a> {
    pub account: &'a mut Account,
    pub events: &'a mut Vec<AcceptedEvent>,
    /// `seq` of the request being served.
    pub seq: u64,
    /// Event indexes an injected partial failure makes fail.
    pub forced_failures: &'a [usize],
    /// Whether an event for an unknown contact creates it.
    pub events_create_contacts: bool,
    /// Cap on `POST /v3/contacts/batch` size (undocumented by Brevo).
    pub contacts_batch_max: Option<usize>,
}

/// Route a `/v3/...` request to its endpoint.
pub fn dispatch(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    cx: Ctx<'_>,
) -> Reply {
    let rest = path.strip_prefix("/v3").unwrap_or(path);
    let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let post = method == Method::POST;
    let get = method == Method::GET;
    let r = match segs.as_slice() {
        ["events"] if post => with_json(headers, body, |b| create_event(b, cx)),
        ["events", "batch"] if post => batch_events(headers, body, cx),
        ["contacts"] if post => with_json(headers, body, |b| create_contact(b, cx.account)),
        ["contacts", "batch"] if post => with_json(headers, body, |b| update_batch(b, cx)),
        ["contacts", "import"] if post => import(headers, body, cx.account),
        ["contacts", "lists"] if post => with_json(headers, body, |b| create_list(b, cx.account)),
        ["contacts", "lists", id, "contacts", op @ ("add" | "remove")] if post => {
            with_json(headers, body, |b| list_members(id, op == &"add", b, cx.account))
        }
        ["contacts", "attributes", category, name] if post => {
            with_json(headers, body, |b| create_attribute(category, name, b, cx.account))
        }
        ["contacts", ident] if get => Ok(get_contact(ident, query, cx.account)),
        ["account"] if get => Ok(Reply::json(
            StatusCode::OK,
            json!({"email": "simulator@sluice.invalid", "companyName": "Sluice Brevo simulator"}),
        )),
        ["processes", id] if get => Ok(get_process(id, cx.account)),
        ["events"]
        | ["events", "batch"]
        | ["contacts"]
        | ["contacts", "batch" | "import" | "lists"]
        | ["contacts", "lists", _, "contacts", "add" | "remove"]
        | ["contacts", "attributes", _, _]
        | ["account"]
        | ["processes", _] => Ok(Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} Method is not allowed on this path"),
        )),
        _ => Ok(Reply::not_found(format!("Invalid route {path}"))),
    };
    r.unwrap_or_else(|e| e)
}

/// Parse a JSON object body after checking the content type; the closure
/// answers for a well-formed body.
fn with_json(
    headers: &HeaderMap,
    body: &[u8],
    f: impl FnOnce(&Map<String, Value>) -> Result<Reply, Reply>,
) -> Result<Reply, Reply> {
    let obj = parse_object(headers, body)?;
    f(&obj)
}

fn parse_object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, Reply> {
    let json_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        // Brevo's answer to a non-JSON content type is undocumented; a 400 in
        // its error model is the conservative guess.
        return Err(Reply::error(StatusCode::BAD_REQUEST, "bad_request", "Content-Type must be application/json"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Reply::error(StatusCode::BAD_REQUEST, "bad_request", "The request body must be a JSON object")),
        Err(e) => Err(Reply::error(StatusCode::BAD_REQUEST, "bad_request", format!("Malformed JSON body: {e}"))),
    }
}

// ---------------------------------------------------------------- events

fn create_event(body: &Map<String, Value>, cx: Ctx<'_>) -> Result<Reply, Reply> {
    let ev = Value::Object(body.clone());
    v::event(&ev, false)?;
    accept_event(ev, 0, cx.seq, cx.account, cx.events, cx.events_create_contacts);
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

fn batch_events(headers: &HeaderMap, body: &[u8], cx: Ctx<'_>) -> Result<Reply, Reply> {
    if body.len() > v::MAX_BATCH_BYTES {
        return Err(invalid(format!(
            "The request body is {} bytes; a batch is limited to {} bytes (512KB)",
            body.len(),
            v::MAX_BATCH_BYTES
        ))
        .into());
    }
    let obj = parse_object(headers, body)?;
    let events = match obj.get("events") {
        None | Some(Value::Null) => return Err(missing("events is required").into()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("events must be an array").into()),
    };
    if events.is_empty() {
        return Err(invalid("events must contain at least one event").into());
    }
    if events.len() > v::MAX_BATCH_EVENTS {
        return Err(invalid(format!(
            "events contains {} events; a batch is limited to {} events",
            events.len(),
            v::MAX_BATCH_EVENTS
        ))
        .into());
    }
    // Brevo groups failed indexes by error message.
    let mut errors: Vec<(String, Vec<usize>)> = Vec::new();
    let mut failed = BTreeSet::new();
    let mut fail = |i: usize, message: String| {
        failed.insert(i);
        match errors.iter_mut().find(|(m, _)| *m == message) {
            Some((_, idx)) => idx.push(i),
            None => errors.push((message, vec![i])),
        }
    };
    for (i, ev) in events.iter().enumerate() {
        if let Err(e) = v::event(ev, true) {
            fail(i, e.message);
        } else if cx.forced_failures.contains(&i) {
            fail(i, "Simulated failure (injected partial_failure fault)".to_string());
        }
    }
    let total = events.len();
    if failed.is_empty() {
        for (i, ev) in events.iter().enumerate() {
            accept_event(ev.clone(), i, cx.seq, cx.account, cx.events, cx.events_create_contacts);
        }
        return Ok(Reply::json(
            StatusCode::ACCEPTED,
            json!({"message": "Batch accepted for processing", "count": total}),
        ));
    }
    let all_failed = failed.len() == total;
    if !all_failed {
        for (i, ev) in events.iter().enumerate().filter(|(i, _)| !failed.contains(i)) {
            accept_event(ev.clone(), i, cx.seq, cx.account, cx.events, cx.events_create_contacts);
        }
    }
    let body = json!({
        "status": if all_failed { "failed" } else { "partial_success" },
        "total_events": total,
        "successful_events": total - failed.len(),
        "failed_events": failed.len(),
        "errors": errors.into_iter().map(|(message, idx)| json!({"eventIndex": idx, "message": message})).collect::<Vec<_>>(),
    });
    // The 207 is documented by CONTRACTS §5 as UNVERIFIED: Brevo's spec only
    // lists 202 and 400 (all invalid) for this endpoint; partial success is
    // assumed to answer 207 with the 400 body shape.
    let status = if all_failed { StatusCode::BAD_REQUEST } else { StatusCode::MULTI_STATUS };
    Ok(Reply::json(status, body))
}

/// Record an accepted event and apply its `contact_properties`. Whether an
/// event for an unknown contact creates it is configurable (Brevo's tracker
/// docs say identify creates contacts; the events API does not say).
fn accept_event(
    ev: Value,
    index: usize,
    seq: u64,
    account: &mut Account,
    events: &mut Vec<AcceptedEvent>,
    create: bool,
) {
    let ids = ev.get("identifiers").and_then(Value::as_object);
    let s = |k: &str| ids.and_then(|m| m.get(k)).and_then(Value::as_str);
    let by_priority = [
        ids.and_then(|m| m.get("contact_id")).and_then(Value::as_u64).map(Ident::Id),
        s("email_id").map(Ident::Email),
        s("ext_id").map(Ident::ExtId),
        s("phone_id").map(|p| Ident::Phone("SMS", p)),
        s("whatsapp_id").map(|p| Ident::Phone("WHATSAPP", p)),
        s("landline_number_id").map(|p| Ident::Phone("LANDLINE_NUMBER", p)),
    ];
    let mut contact = by_priority.iter().flatten().find_map(|i| account.find(*i));
    let has_contact_id = by_priority[0].is_some();
    if contact.is_none() && create && !has_contact_id {
        let id = account.create();
        // Nothing matched any identifier, so setting them cannot clash.
        if let Some(e) = s("email_id") {
            let _ = account.set_email(id, e);
        }
        if let Some(x) = s("ext_id") {
            let _ = account.set_ext_id(id, x);
        }
        let mut phones = Map::new();
        for (key, attr) in [("phone_id", "SMS"), ("whatsapp_id", "WHATSAPP"), ("landline_number_id", "LANDLINE_NUMBER")]
        {
            if let Some(p) = s(key) {
                phones.insert(attr.into(), Value::String(p.into()));
            }
        }
        let _ = account.apply_attributes(id, &phones, false);
        contact = Some(id);
    }
    if let (Some(id), Some(props)) = (contact, ev.get("contact_properties").and_then(Value::as_object)) {
        // A property naming another contact's identifier is dropped, not an
        // error: the event was already accepted.
        let _ = account.apply_attributes(id, props, false);
    }
    events.push(AcceptedEvent { request: seq, index, contact_id: contact, event: ev });
}

// ---------------------------------------------------------------- contacts

fn create_contact(body: &Map<String, Value>, account: &mut Account) -> Result<Reply, Reply> {
    let email = v::string(body, "email")?;
    if let Some(e) = email {
        if !v::is_email(e) {
            return Err(invalid(format!("Invalid email address: {e:?}")).into());
        }
    }
    let ext_id = v::string(body, "ext_id")?.filter(|x| !x.is_empty());
    let empty = Map::new();
    let attrs = match body.get("attributes") {
        None | Some(Value::Null) => &empty,
        Some(a) => {
            v::contact_attributes(a)?;
            a.as_object().unwrap_or(&empty)
        }
    };
    let sms = attrs.get("SMS").and_then(Value::as_str);
    if email.is_none() && ext_id.is_none() && sms.is_none() {
        return Err(missing("email, ext_id or attributes.SMS is required").into());
    }
    let list_ids = v::list_ids(body.get("listIds"), "listIds")?;
    if let Some(id) = account.missing_list(&list_ids) {
        return Err(invalid(format!("listIds: list {id} does not exist")).into());
    }
    let update_enabled = v::flag(body, "updateEnabled")?.unwrap_or(false);
    let email_bl = v::flag(body, "emailBlacklisted")?;
    let sms_bl = v::flag(body, "smsBlacklisted")?;

    let mut owners: Vec<(&'static str, u64)> = Vec::new();
    if let Some(id) = email.and_then(|e| account.find(Ident::Email(e))) {
        owners.push(("email", id));
    }
    if let Some(id) = ext_id.and_then(|x| account.find(Ident::ExtId(x))) {
        owners.push(("ext_id", id));
    }
    if let Some(id) = sms.and_then(|p| account.find(Ident::Phone("SMS", p))) {
        owners.push(("SMS", id));
    }
    let existing: BTreeSet<u64> = owners.iter().map(|(_, id)| *id).collect();
    if existing.len() > 1 || (existing.len() == 1 && !update_enabled) {
        let field = owners.last().map_or("email", |(f, _)| *f);
        return Err(Duplicate { field }.into());
    }
    account.check_identity(existing.first().copied(), email, ext_id, attrs)?;
    let (id, status) = match existing.first() {
        Some(id) => (*id, StatusCode::NO_CONTENT),
        None => (account.create(), StatusCode::CREATED),
    };
    // Cannot clash: checked just above.
    apply_identity(account, id, email, ext_id, attrs, false);
    account.set_flags(id, email_bl, sms_bl);
    for l in list_ids {
        account.add_to_list(id, l);
    }
    if status == StatusCode::CREATED {
        Ok(Reply::json(status, json!({"id": id})))
    } else {
        Ok(Reply::empty(status))
    }
}

fn update_batch(body: &Map<String, Value>, cx: Ctx<'_>) -> Result<Reply, Reply> {
    let account = cx.account;
    let items = match body.get("contacts") {
        None | Some(Value::Null) => return Err(missing("contacts is required").into()),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(invalid("contacts must contain at least one contact").into()),
        Some(_) => return Err(invalid("contacts must be an array").into()),
    };
    if let Some(max) = cx.contacts_batch_max {
        if items.len() > max {
            return Err(invalid(format!("contacts contains {} contacts; the limit is {max}", items.len())).into());
        }
    }
    // Resolve and validate everything first: one unknown contact fails the
    // whole call and nothing is applied.
    let mut plan = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(c) = item.as_object() else { return Err(invalid(format!("contacts[{i}] must be an object")).into()) };
        let email = v::string(c, "email")?;
        let sms = v::string(c, "sms")?;
        let id = match c.get("id") {
            None | Some(Value::Null) => None,
            Some(x) => Some(x.as_u64().ok_or_else(|| invalid(format!("contacts[{i}].id must be an integer")))?),
        };
        let given = [email.is_some(), sms.is_some(), id.is_some()].iter().filter(|b| **b).count();
        if given == 0 {
            return Err(missing(format!("contacts[{i}]: one of email, id or sms is required")).into());
        }
        if given > 1 {
            return Err(invalid(format!("contacts[{i}]: pass only one of email, id or sms")).into());
        }
        let ident = match (email, sms, id) {
            (Some(e), _, _) => Ident::Email(e),
            (_, Some(p), _) => Ident::Phone("SMS", p),
            (_, _, Some(n)) => Ident::Id(n),
            _ => unreachable!("exactly one identifier was counted above"),
        };
        let Some(contact) = account.find(ident) else {
            let shown = email.map(str::to_string).or(sms.map(str::to_string)).or(id.map(|n| n.to_string()));
            return Err(Reply::not_found(format!("Contact does not exist: {}", shown.unwrap_or_default())));
        };
        let add = v::list_ids(c.get("listIds"), "listIds")?;
        let unlink = v::list_ids(c.get("unlinkListIds"), "unlinkListIds")?;
        if let Some(l) = account.missing_list(&add).or(account.missing_list(&unlink)) {
            return Err(invalid(format!("contacts[{i}]: list {l} does not exist")).into());
        }
        let attrs = match c.get("attributes") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(invalid(format!("contacts[{i}].attributes must be an object")).into()),
        };
        let ext_id = v::string(c, "ext_id")?.map(str::to_string);
        let flags = (v::flag(c, "emailBlacklisted")?, v::flag(c, "smsBlacklisted")?);
        plan.push((contact, attrs, ext_id, flags, add, unlink));
    }
    // Items can clash with each other (two contacts given one SMS), which
    // only shows while applying: keep a copy to undo the whole call.
    let snapshot = account.clone();
    for (id, attrs, ext_id, (ebl, sbl), add, unlink) in plan {
        let applied = (|| {
            if let Some(x) = &ext_id {
                account.set_ext_id(id, x)?;
            }
            account.apply_attributes(id, &attrs, true)
        })();
        if let Err(d) = applied {
            *account = snapshot;
            return Err(d.into());
        }
        account.set_flags(id, ebl, sbl);
        for l in add {
            account.add_to_list(id, l);
        }
        for l in unlink {
            account.remove_from_list(id, l);
        }
    }
    Ok(Reply::empty(StatusCode::NO_CONTENT))
}

fn import(headers: &HeaderMap, body: &[u8], account: &mut Account) -> Result<Reply, Reply> {
    if body.len() > v::MAX_IMPORT_BYTES {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "out_of_range",
            format!("The import body is {} bytes; the limit is 10MB", body.len()),
        ));
    }
    let obj = parse_object(headers, body)?;
    let json_body = obj.get("jsonBody").filter(|v| !v.is_null());
    let file_body = v::string(&obj, "fileBody")?;
    let file_url = v::string(&obj, "fileUrl")?;
    let sources = [json_body.is_some(), file_body.is_some(), file_url.is_some()].iter().filter(|b| **b).count();
    if sources == 0 {
        return Err(missing("one of fileUrl, fileBody or jsonBody is required").into());
    }
    if sources > 1 {
        return Err(invalid("pass only one of fileUrl, fileBody or jsonBody").into());
    }
    if file_url.is_some() {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "fileUrl is valid for Brevo but the simulator does not fetch URLs: send jsonBody or fileBody",
        ));
    }
    let mut list_ids = v::list_ids(obj.get("listIds"), "listIds")?;
    let new_list = match obj.get("newList") {
        None | Some(Value::Null) => None,
        Some(Value::Object(n)) => match v::string(n, "listName")? {
            Some(name) if !name.is_empty() => Some(name.to_string()),
            _ => return Err(missing("newList.listName is required").into()),
        },
        Some(_) => return Err(invalid("newList must be an object").into()),
    };
    if list_ids.is_empty() && new_list.is_none() {
        return Err(missing("listIds is required when newList is not given").into());
    }
    if let Some(l) = account.missing_list(&list_ids) {
        return Err(invalid(format!("listIds: list {l} does not exist")).into());
    }
    let rows: Vec<Map<String, Value>> = match (json_body, file_body) {
        (Some(Value::Array(items)), _) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_object().cloned().ok_or_else(|| invalid(format!("jsonBody[{i}] must be an object")))
            })
            .collect::<Result<_, _>>()?,
        (Some(_), _) => return Err(invalid("jsonBody must be an array").into()),
        (None, Some(csv)) => csv_rows(csv)?,
        (None, None) => Vec::new(),
    };
    let update_existing = v::flag(&obj, "updateExistingContacts")?.unwrap_or(true);
    let empty_erases = v::flag(&obj, "emptyContactsAttributes")?.unwrap_or(false) && update_existing;
    let email_bl = v::flag(&obj, "emailBlacklist")?.filter(|b| *b);
    let sms_bl = v::flag(&obj, "smsBlacklist")?.filter(|b| *b);

    if let Some(name) = new_list {
        list_ids.push(account.create_list(&name));
    }
    let mut report = ImportReport {
        process_id: account.new_process_id(),
        created: 0,
        updated: 0,
        skipped_existing: 0,
        invalid: 0,
        list_ids: list_ids.clone(),
    };
    for row in rows {
        let attrs = row.get("attributes").and_then(Value::as_object).cloned().unwrap_or_default();
        let email = row
            .get("email")
            .and_then(Value::as_str)
            .or(attrs.get("EMAIL").and_then(Value::as_str))
            .filter(|e| v::is_email(e));
        let ext_id = row
            .get("ext_id")
            .and_then(Value::as_str)
            .or(attrs.get("EXT_ID").and_then(Value::as_str))
            .filter(|x| !x.is_empty());
        let sms = attrs.get("SMS").and_then(Value::as_str).filter(|p| !p.is_empty());
        let found = email
            .and_then(|e| account.find(Ident::Email(e)))
            .or(ext_id.and_then(|x| account.find(Ident::ExtId(x))))
            .or(sms.and_then(|p| account.find(Ident::Phone("SMS", p))));
        match found {
            Some(_) if !update_existing => {
                report.skipped_existing += 1;
                continue;
            }
            None if email.is_none() && ext_id.is_none() && sms.is_none() => {
                report.invalid += 1;
                continue;
            }
            _ => {}
        }
        // A row whose identifiers clash with another contact is skipped, as
        // an import reports bad rows instead of failing the whole file.
        if account.check_identity(found, email, ext_id, &attrs).is_err() {
            report.invalid += 1;
            continue;
        }
        let id = match found {
            Some(id) => {
                report.updated += 1;
                id
            }
            None => {
                report.created += 1;
                account.create()
            }
        };
        apply_identity(account, id, email, ext_id, &attrs, empty_erases);
        account.set_flags(id, email_bl, sms_bl);
        for l in &list_ids {
            account.add_to_list(id, *l);
        }
    }
    let process_id = report.process_id;
    account.imports.push(report);
    Ok(Reply::json(StatusCode::ACCEPTED, json!({"processId": process_id})))
}

/// Set identifiers and attributes already cleared by
/// [`Account::check_identity`], so they cannot clash.
fn apply_identity(
    account: &mut Account,
    id: u64,
    email: Option<&str>,
    ext_id: Option<&str>,
    attrs: &Map<String, Value>,
    empty_erases: bool,
) {
    if let Some(e) = email {
        let _ = account.set_email(id, e);
    }
    if let Some(x) = ext_id {
        let _ = account.set_ext_id(id, x);
    }
    let _ = account.apply_attributes(id, attrs, empty_erases);
}

/// `fileBody`: semicolon-separated CSV whose header names the attributes
/// (`EMAIL`, `EXT_ID`, `SMS`, `FIRSTNAME`, ...).
fn csv_rows(csv: &str) -> Result<Vec<Map<String, Value>>, Invalid> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = match lines.next() {
        Some(h) => h.split(';').map(|c| c.trim().to_uppercase()).collect(),
        None => return Err(invalid("fileBody is empty")),
    };
    Ok(lines
        .map(|line| {
            let attrs: Map<String, Value> = header
                .iter()
                .zip(line.split(';'))
                .map(|(name, cell)| (name.clone(), Value::String(cell.trim().to_string())))
                .collect();
            let mut row = Map::new();
            row.insert("attributes".into(), Value::Object(attrs));
            row
        })
        .collect())
}

fn create_list(body: &Map<String, Value>, account: &mut Account) -> Result<Reply, Reply> {
    let name = v::string(body, "name")?.filter(|n| !n.is_empty()).ok_or_else(|| missing("name is required"))?;
    if matches!(body.get("folderId"), None | Some(Value::Null)) {
        return Err(missing("folderId is required").into());
    }
    let id = account.create_list(name);
    Ok(Reply::json(StatusCode::CREATED, json!({"id": id})))
}

fn list_members(id: &str, add: bool, body: &Map<String, Value>, account: &mut Account) -> Result<Reply, Reply> {
    let list: u64 = id.parse().map_err(|_| invalid(format!("listId must be an integer, got {id:?}")))?;
    if !account.lists.contains_key(&list) {
        return Err(Reply::not_found("List ID does not exist"));
    }
    if !add && v::flag(body, "all")? == Some(true) {
        let members = account.members(list);
        for c in &members {
            account.remove_from_list(*c, list);
        }
        let process_id = account.new_process_id();
        return Ok(Reply::json(
            StatusCode::CREATED,
            json!({"contacts": {"total": members.len(), "processId": process_id}}),
        ));
    }
    let keys: Vec<&str> = ["emails", "ids", "extIds"].into_iter().filter(|k| body.get(*k).is_some()).collect();
    let key = match keys.as_slice() {
        [] => {
            let also = if add { "" } else { " (or all: true)" };
            return Err(missing(format!("one of emails, ids or extIds is required{also}")).into());
        }
        [k] => *k,
        _ => return Err(invalid("pass only one of emails, ids or extIds").into()),
    };
    let Some(items) = body.get(key).and_then(Value::as_array) else {
        return Err(invalid(format!("{key} must be an array")).into());
    };
    if items.is_empty() || items.len() > v::MAX_LIST_ITEMS {
        return Err(invalid(format!(
            "{key} contains {} items; between 1 and {} are allowed per request",
            items.len(),
            v::MAX_LIST_ITEMS
        ))
        .into());
    }
    let mut success = Vec::new();
    let mut failure = Vec::new();
    for item in items {
        let ident = match (key, item) {
            ("ids", x) => x.as_u64().map(Ident::Id),
            ("emails", Value::String(e)) => Some(Ident::Email(e)),
            ("extIds", Value::String(x)) => Some(Ident::ExtId(x)),
            _ => None,
        };
        let Some(ident) = ident else {
            let want = if key == "ids" { "integers" } else { "strings" };
            return Err(invalid(format!("{key} must be an array of {want}")).into());
        };
        // "could be already in/out list and/or doesn't exist"
        let changed = match account.find(ident) {
            Some(c) if add => account.add_to_list(c, list),
            Some(c) => account.remove_from_list(c, list),
            None => false,
        };
        if changed {
            success.push(item.clone());
        } else {
            failure.push(item.clone());
        }
    }
    Ok(Reply::json(StatusCode::CREATED, json!({"contacts": {"success": success, "failure": failure}})))
}

const ATTRIBUTE_CATEGORIES: [&str; 5] = ["normal", "transactional", "category", "calculated", "global"];

fn create_attribute(
    category: &str,
    name: &str,
    body: &Map<String, Value>,
    account: &mut Account,
) -> Result<Reply, Reply> {
    if !ATTRIBUTE_CATEGORIES.contains(&category) {
        return Err(invalid(format!(
            "attributeCategory must be one of {}, got {category:?}",
            ATTRIBUTE_CATEGORIES.join(", ")
        ))
        .into());
    }
    let name = percent_decode(name).unwrap_or_default();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(invalid(format!("attributeName {name:?} may only contain letters, digits and underscores")).into());
    }
    let upper = name.to_uppercase();
    let kind = match v::string(body, "type")? {
        None => match category {
            "category" => AttributeType::Category,
            _ => AttributeType::Text,
        },
        Some(t) => {
            AttributeType::parse(t).ok_or_else(|| invalid(format!("type {t:?} is not a valid attribute type")))?
        }
    };
    let allowed = match category {
        "normal" => !matches!(kind, AttributeType::Id | AttributeType::Category),
        "transactional" => {
            !matches!(kind, AttributeType::Category | AttributeType::MultipleChoice | AttributeType::Boolean)
        }
        "category" => kind == AttributeType::Category,
        _ => true,
    };
    if !allowed {
        return Err(invalid(format!("type {kind:?} is not available for {category} attributes")).into());
    }
    if account.attributes.contains_key(&upper) {
        return Err(invalid(format!("Attribute name must be unique: {upper} already exists")).into());
    }
    account.attributes.insert(upper, kind);
    Ok(Reply::empty(StatusCode::CREATED))
}

fn get_contact(raw: &str, query: Option<&str>, account: &Account) -> Reply {
    let Some(ident) = percent_decode(raw) else {
        return Reply::error(StatusCode::BAD_REQUEST, "invalid_parameter", "identifier is not valid UTF-8");
    };
    let kind = query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "identifierType").map(|(_, v)| v.into_owned())
        })
        .unwrap_or(None);
    let found = match kind.as_deref() {
        Some("email_id") => account.find(Ident::Email(&ident)),
        Some("ext_id") => account.find(Ident::ExtId(&ident)),
        Some("phone_id") => account.find(Ident::Phone("SMS", &ident)),
        Some("whatsapp_id") => account.find(Ident::Phone("WHATSAPP", &ident)),
        Some("landline_number_id") => account.find(Ident::Phone("LANDLINE_NUMBER", &ident)),
        Some("contact_id") => ident.parse().ok().and_then(|n| account.find(Ident::Id(n))),
        Some(other) => {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_parameter",
                format!("identifierType {other:?} is not supported"),
            )
        }
        // Without identifierType Brevo tries email, contact id and SMS.
        None if ident.contains('@') => account.find(Ident::Email(&ident)),
        None => match ident.parse::<u64>() {
            Ok(n) => account.find(Ident::Id(n)).or(account.find(Ident::Phone("SMS", &ident))),
            Err(_) => account.find(Ident::Phone("SMS", &ident)),
        },
    };
    match found.and_then(|id| account.get(id)) {
        Some(c) => Reply::json(StatusCode::OK, c.to_brevo_json()),
        None => Reply::not_found("Contact does not exist"),
    }
}

fn get_process(id: &str, account: &Account) -> Reply {
    let report = id.parse::<u64>().ok().and_then(|n| account.imports.iter().find(|r| r.process_id == n));
    match report {
        Some(r) => Reply::json(StatusCode::OK, json!({"id": r.process_id, "status": "completed", "name": "import"})),
        None => Reply::not_found("Process does not exist"),
    }
}

/// Decode `%XX` escapes of one path segment.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
