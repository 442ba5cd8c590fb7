//! The simulated Brevo account: contacts, lists, contact attributes and
//! import processes, with the identity rules the contacts endpoints enforce
//! (email, `ext_id` and `SMS` each belong to at most one contact).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::validate::is_email;

/// A contact as the simulator stores it. Emails are stored lower-cased, as
/// Brevo does; `SMS`, `WHATSAPP` and `LANDLINE_NUMBER` live in `attributes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contact {
    pub id: u64,
    pub email: Option<String>,
    pub ext_id: Option<String>,
    pub attributes: BTreeMap<String, Value>,
    pub list_ids: BTreeSet<u64>,
    pub email_blacklisted: bool,
    pub sms_blacklisted: bool,
}

impl Contact {
    /// The `GET /v3/contacts/{identifier}` representation.
    pub fn to_brevo_json(&self) -> Value {
        let mut attributes: Map<String, Value> = self.attributes.clone().into_iter().collect();
        if let Some(ext) = &self.ext_id {
            attributes.insert("EXT_ID".into(), Value::String(ext.clone()));
        }
        serde_json::json!({
            "id": self.id,
            "email": self.email,
            "emailBlacklisted": self.email_blacklisted,
            "smsBlacklisted": self.sms_blacklisted,
            "attributes": attributes,
            "listIds": self.list_ids,
            "statistics": {},
        })
    }
}

/// Types of contact attributes (`createAttribute.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttributeType {
    Text,
    Float,
    Date,
    Boolean,
    MultipleChoice,
    Id,
    Category,
}

impl AttributeType {
    pub fn parse(s: &str) -> Option<AttributeType> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }

    /// Whether Brevo keeps a value of this shape for an attribute of this
    /// type ("values that don't match the attribute type will be ignored").
    fn accepts(self, v: &Value) -> bool {
        match self {
            AttributeType::Text => v.is_string() || v.is_number(),
            AttributeType::Float => v.is_number(),
            AttributeType::Boolean => v.is_boolean(),
            AttributeType::Date => v.as_str().is_some_and(|s| {
                chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
                    || chrono::DateTime::parse_from_rfc3339(s).is_ok()
            }),
            AttributeType::MultipleChoice => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            AttributeType::Id | AttributeType::Category => v.is_string() || v.is_number(),
        }
    }
}

/// The attributes a new Brevo account has: identifiers stored as attributes
/// plus the usual name fields.
pub fn default_attributes() -> BTreeMap<String, AttributeType> {
    [
        ("FIRSTNAME", AttributeType::Text),
        ("LASTNAME", AttributeType::Text),
        ("SMS", AttributeType::Text),
        ("WHATSAPP", AttributeType::Text),
        ("LANDLINE_NUMBER", AttributeType::Text),
        ("OPT_IN", AttributeType::Boolean),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

/// Attribute values the account dropped, by attribute name: what a client
/// that forgot to create an attribute (or sent the wrong type) would never
/// notice against the real API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IgnoredAttribute {
    /// The attribute does not exist in the account.
    pub unknown: u64,
    /// The value does not match the attribute's type.
    pub wrong_type: u64,
}

/// Attributes holding phone numbers, each unique across contacts.
pub const PHONE_ATTRIBUTES: [&str; 3] = ["SMS", "WHATSAPP", "LANDLINE_NUMBER"];

/// How a contact is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ident<'a> {
    Id(u64),
    Email(&'a str),
    ExtId(&'a str),
    /// An attribute holding a phone number: `SMS`, `WHATSAPP`, `LANDLINE_NUMBER`.
    Phone(&'static str, &'a str),
}

/// What one `POST /v3/contacts/import` did (the real import is asynchronous;
/// the simulator applies it before answering 202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub process_id: u64,
    pub created: u64,
    pub updated: u64,
    /// Existing contacts left alone because `updateExistingContacts` was false.
    pub skipped_existing: u64,
    /// Rows without a usable identifier.
    pub invalid: u64,
    pub list_ids: Vec<u64>,
}

/// A duplicate identifier: another contact already owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub field: &'static str,
}

#[derive(Debug, Clone)]
pub struct Account {
    contacts: BTreeMap<u64, Contact>,
    /// Lower-cased email → contact id, so lookups stay cheap at bench scale.
    by_email: HashMap<String, u64>,
    by_ext_id: HashMap<String, u64>,
    next_contact_id: u64,
    pub lists: BTreeMap<u64, String>,
    next_list_id: u64,
    pub attributes: BTreeMap<String, AttributeType>,
    pub ignored_attributes: BTreeMap<String, IgnoredAttribute>,
    pub imports: Vec<ImportReport>,
    next_process_id: u64,
}

impl Account {
    pub fn new(lists: BTreeMap<u64, String>, attributes: BTreeMap<String, AttributeType>) -> Account {
        let next_list_id = lists.keys().max().map_or(1, |m| m + 1);
        Account {
            contacts: BTreeMap::new(),
            by_email: HashMap::new(),
            by_ext_id: HashMap::new(),
            next_contact_id: 1,
            lists,
            next_list_id,
            attributes,
            ignored_attributes: BTreeMap::new(),
            imports: Vec::new(),
            next_process_id: 1,
        }
    }

    pub fn contacts(&self) -> Vec<Contact> {
        self.contacts.values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<&Contact> {
        self.contacts.get(&id)
    }

    pub fn find(&self, ident: Ident<'_>) -> Option<u64> {
        match ident {
            Ident::Id(id) => self.contacts.contains_key(&id).then_some(id),
            Ident::Email(e) => self.by_email.get(&e.to_lowercase()).copied(),
            Ident::ExtId(x) => self.by_ext_id.get(x).copied(),
            Ident::Phone(attr, p) => {
                self.contacts.values().find(|c| c.attributes.get(attr).and_then(Value::as_str) == Some(p)).map(|c| c.id)
            }
        }
    }

    pub fn new_process_id(&mut self) -> u64 {
        let id = self.next_process_id;
        self.next_process_id += 1;
        id
    }

    pub fn create_list(&mut self, name: &str) -> u64 {
        let id = self.next_list_id;
        self.next_list_id += 1;
        self.lists.insert(id, name.to_string());
        id
    }

    /// First list id in `ids` that does not exist.
    pub fn missing_list(&self, ids: &[u64]) -> Option<u64> {
        ids.iter().copied().find(|id| !self.lists.contains_key(id))
    }

    /// A new empty contact; identifiers are set through [`Account::set_email`] etc.
    pub fn create(&mut self) -> u64 {
        let id = self.next_contact_id;
        self.next_contact_id += 1;
        self.contacts.insert(
            id,
            Contact {
                id,
                email: None,
                ext_id: None,
                attributes: BTreeMap::new(),
                list_ids: BTreeSet::new(),
                email_blacklisted: false,
                sms_blacklisted: false,
            },
        );
        id
    }

    fn owned_by_other(&self, id: u64, ident: Ident<'_>) -> bool {
        self.find(ident).is_some_and(|owner| owner != id)
    }

    pub fn set_email(&mut self, id: u64, email: &str) -> Result<(), Duplicate> {
        if self.owned_by_other(id, Ident::Email(email)) {
            return Err(Duplicate { field: "email" });
        }
        if let Some(c) = self.contacts.get_mut(&id) {
            let email = email.to_lowercase();
            if let Some(old) = c.email.replace(email.clone()) {
                self.by_email.remove(&old);
            }
            self.by_email.insert(email, id);
        }
        Ok(())
    }

    pub fn set_ext_id(&mut self, id: u64, ext_id: &str) -> Result<(), Duplicate> {
        if self.owned_by_other(id, Ident::ExtId(ext_id)) {
            return Err(Duplicate { field: "ext_id" });
        }
        if let Some(c) = self.contacts.get_mut(&id) {
            if let Some(old) = c.ext_id.replace(ext_id.to_string()) {
                self.by_ext_id.remove(&old);
            }
            self.by_ext_id.insert(ext_id.to_string(), id);
        }
        Ok(())
    }

    pub fn set_flags(&mut self, id: u64, email_blacklisted: Option<bool>, sms_blacklisted: Option<bool>) {
        if let Some(c) = self.contacts.get_mut(&id) {
            if let Some(b) = email_blacklisted {
                c.email_blacklisted = b;
            }
            if let Some(b) = sms_blacklisted {
                c.sms_blacklisted = b;
            }
        }
    }

    /// Whether giving contact `id` (or a new contact, `None`) these
    /// identifiers and attribute values would take one another contact owns:
    /// checked before applying anything, so a refused write changes nothing.
    pub fn check_identity(
        &self,
        id: Option<u64>,
        email: Option<&str>,
        ext_id: Option<&str>,
        attrs: &Map<String, Value>,
    ) -> Result<(), Duplicate> {
        let taken = |ident: Ident<'_>| self.find(ident).is_some_and(|owner| Some(owner) != id);
        let attr = |k: &str| attrs.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        for e in [email, attr("EMAIL").filter(|e| is_email(e))].into_iter().flatten() {
            if taken(Ident::Email(e)) {
                return Err(Duplicate { field: "email" });
            }
        }
        for x in [ext_id, attr("EXT_ID")].into_iter().flatten() {
            if taken(Ident::ExtId(x)) {
                return Err(Duplicate { field: "ext_id" });
            }
        }
        for phone in PHONE_ATTRIBUTES {
            if attr(phone).is_some_and(|p| taken(Ident::Phone(phone, p))) {
                return Err(Duplicate { field: phone });
            }
        }
        Ok(())
    }

    /// Apply attribute values. `EMAIL` and `EXT_ID` change identifiers;
    /// phone attributes must stay unique. Values for attributes the account
    /// does not have, or of the wrong type, are dropped and counted. `null`
    /// and `""` erase the attribute only when `empty_erases`.
    pub fn apply_attributes(
        &mut self,
        id: u64,
        attrs: &Map<String, Value>,
        empty_erases: bool,
    ) -> Result<(), Duplicate> {
        for (name, value) in attrs {
            let empty = value.is_null() || value.as_str() == Some("");
            match name.as_str() {
                "EMAIL" => {
                    if let Some(e) = value.as_str().filter(|e| is_email(e)) {
                        self.set_email(id, e)?;
                    }
                    continue;
                }
                "EXT_ID" => {
                    if let Some(x) = value.as_str().filter(|x| !x.is_empty()) {
                        self.set_ext_id(id, x)?;
                    }
                    continue;
                }
                _ => {}
            }
            let Some(kind) = self.attributes.get(name).copied() else {
                self.ignored_attributes.entry(name.clone()).or_default().unknown += 1;
                continue;
            };
            if empty {
                if empty_erases {
                    if let Some(c) = self.contacts.get_mut(&id) {
                        c.attributes.remove(name);
                    }
                }
                continue;
            }
            if !kind.accepts(value) {
                self.ignored_attributes.entry(name.clone()).or_default().wrong_type += 1;
                continue;
            }
            for phone in PHONE_ATTRIBUTES {
                if name == phone {
                    if let Some(p) = value.as_str() {
                        if self.owned_by_other(id, Ident::Phone(phone, p)) {
                            return Err(Duplicate { field: phone });
                        }
                    }
                }
            }
            if let Some(c) = self.contacts.get_mut(&id) {
                c.attributes.insert(name.clone(), value.clone());
            }
        }
        Ok(())
    }

    /// Add to lists; returns whether the contact was not already on `list`.
    pub fn add_to_list(&mut self, id: u64, list: u64) -> bool {
        self.contacts.get_mut(&id).is_some_and(|c| c.list_ids.insert(list))
    }

    pub fn remove_from_list(&mut self, id: u64, list: u64) -> bool {
        self.contacts.get_mut(&id).is_some_and(|c| c.list_ids.remove(&list))
    }

    /// Members of a list, for `remove` with `all: true`.
    pub fn members(&self, list: u64) -> Vec<u64> {
        self.contacts.values().filter(|c| c.list_ids.contains(&list)).map(|c| c.id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account() -> Account {
        Account::new(BTreeMap::from([(1, "a".into())]), default_attributes())
    }

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn identifiers_are_unique_and_emails_case_insensitive() {
        let mut a = account();
        let x = a.create();
        let y = a.create();
        a.set_email(x, "Jane@Example.com").unwrap();
        assert_eq!(a.find(Ident::Email("jane@example.COM")), Some(x));
        assert_eq!(a.set_email(y, "jane@example.com"), Err(Duplicate { field: "email" }));
        a.set_ext_id(x, "u1").unwrap();
        assert_eq!(a.set_ext_id(y, "u1"), Err(Duplicate { field: "ext_id" }));
        a.apply_attributes(x, &attrs(json!({"SMS": "+33600000000"})), false).unwrap();
        assert_eq!(a.find(Ident::Phone("SMS", "+33600000000")), Some(x));
        assert_eq!(
            a.apply_attributes(y, &attrs(json!({"SMS": "+33600000000"})), false),
            Err(Duplicate { field: "SMS" })
        );
    }

    #[test]
    fn identity_is_checked_before_writing() {
        let mut a = account();
        let x = a.create();
        a.set_email(x, "x@example.com").unwrap();
        a.set_ext_id(x, "ext-x").unwrap();
        let none = Map::new();
        assert_eq!(a.check_identity(None, Some("X@example.com"), None, &none), Err(Duplicate { field: "email" }));
        assert_eq!(a.check_identity(Some(x), Some("x@example.com"), Some("ext-x"), &none), Ok(()));
        assert_eq!(
            a.check_identity(None, None, None, &attrs(json!({"EXT_ID": "ext-x"}))),
            Err(Duplicate { field: "ext_id" })
        );
        // Renaming frees the old email.
        a.set_email(x, "renamed@example.com").unwrap();
        assert_eq!(a.find(Ident::Email("x@example.com")), None);
        assert_eq!(a.check_identity(None, Some("x@example.com"), None, &none), Ok(()));
    }

    #[test]
    fn unknown_or_mistyped_attributes_are_dropped_and_counted() {
        let mut a = account();
        let x = a.create();
        a.apply_attributes(x, &attrs(json!({"FIRSTNAME": "Jane", "PLAN": "pro", "OPT_IN": "yes"})), false).unwrap();
        let c = a.get(x).unwrap();
        assert_eq!(c.attributes.get("FIRSTNAME"), Some(&json!("Jane")));
        assert!(!c.attributes.contains_key("PLAN"));
        assert!(!c.attributes.contains_key("OPT_IN"));
        assert_eq!(a.ignored_attributes["PLAN"], IgnoredAttribute { unknown: 1, wrong_type: 0 });
        assert_eq!(a.ignored_attributes["OPT_IN"], IgnoredAttribute { unknown: 0, wrong_type: 1 });
    }

    #[test]
    fn empty_values_erase_only_when_asked() {
        let mut a = account();
        let x = a.create();
        a.apply_attributes(x, &attrs(json!({"FIRSTNAME": "Jane"})), false).unwrap();
        a.apply_attributes(x, &attrs(json!({"FIRSTNAME": ""})), false).unwrap();
        assert_eq!(a.get(x).unwrap().attributes.get("FIRSTNAME"), Some(&json!("Jane")));
        a.apply_attributes(x, &attrs(json!({"FIRSTNAME": ""})), true).unwrap();
        assert_eq!(a.get(x).unwrap().attributes.get("FIRSTNAME"), None);
    }

    #[test]
    fn list_membership() {
        let mut a = account();
        let x = a.create();
        assert!(a.add_to_list(x, 1));
        assert!(!a.add_to_list(x, 1));
        assert_eq!(a.members(1), vec![x]);
        assert!(a.remove_from_list(x, 1));
        assert!(!a.remove_from_list(x, 1));
        assert_eq!(a.missing_list(&[1, 9]), Some(9));
        assert_eq!(a.create_list("new"), 2);
    }
}
