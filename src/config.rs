//! Configuration: YAML in the vocabulary of the PostHog and Amplitude
//! connector docs, `${VAR}` interpolation from the environment, defaults for
//! everything optional, unknown keys refused with their path.
//!
//! Every struct denies unknown fields; every default is a named function so
//! `check-config` can print the effective configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that must never reach a log, `Debug` output or `check-config`.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The real value, for the one place that needs it (an HMAC key, a header).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub bus: BusConfig,
    #[serde(default)]
    pub connectors: Connectors,
    #[serde(default)]
    pub brevo: BrevoConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// The HTTP side: ingress routes, `/healthz`, `/readyz`, `/metrics`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the HTTP server binds.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Whole-request deadline, including reading the body; protects against
    /// slow clients holding connections.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// A client must send its request headers within this time (slowloris
    /// protection); also bounds how long an idle keep-alive connection waits.
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// Requests handled at once; beyond it the server answers 503 at once.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Threads serving HTTP connections, each connection on one thread for
    /// life; 0 (the default) means two per core available to the process
    /// (a container's CPU limit counts).
    #[serde(default)]
    pub http_threads: usize,
    /// How long shutdown waits for in-flight requests and the forwarder.
    /// Match Kubernetes' `terminationGracePeriodSeconds` to it.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Seconds clients are told to wait (`Retry-After`) when the bus refuses.
    #[serde(default = "default_retry_after_secs")]
    pub retry_after_secs: u64,
    /// Open mode (no tokens configured) on a non-loopback address is refused
    /// unless this is set: anyone could then write into your Brevo account.
    #[serde(default)]
    pub allow_open_mode: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_header_read_timeout_secs() -> u64 {
    10
}
fn default_max_concurrent_requests() -> usize {
    4096
}
fn default_shutdown_grace_secs() -> u64 {
    25
}
fn default_retry_after_secs() -> u64 {
    5
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            request_timeout_secs: default_request_timeout_secs(),
            header_read_timeout_secs: default_header_read_timeout_secs(),
            max_concurrent_requests: default_max_concurrent_requests(),
            http_threads: 0,
            shutdown_grace_secs: default_shutdown_grace_secs(),
            retry_after_secs: default_retry_after_secs(),
            allow_open_mode: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    #[default]
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    #[serde(default)]
    pub kind: BusKind,
    /// Directory of the embedded log (and of the embedded dedup stores).
    #[serde(default = "default_bus_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub embedded: EmbeddedConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
}

fn default_bus_path() -> PathBuf {
    PathBuf::from("./sluice-data")
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Embedded,
            path: default_bus_path(),
            embedded: EmbeddedConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

/// Retention of the embedded log. Records past either bound are deleted;
/// deleting records the forwarder has not acknowledged yet is counted in
/// `sluice_embedded_retention_dropped_total`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// Bytes of the events table as stored (after compression).
    #[serde(default = "default_retention_max_bytes")]
    pub retention_max_bytes: u64,
    #[serde(default = "default_retention_max_age_secs")]
    pub retention_max_age_secs: u64,
    /// Publishes waiting for the same fsync; bounds the commit group.
    #[serde(default = "default_max_commit_records")]
    pub max_commit_records: usize,
    /// How record chunks are stored: `lz4` (the default, as the Kafka
    /// producer's `compression.type`) or `none`. Either is read back.
    #[serde(default)]
    pub compression: LogCompression,
}

/// Compression of the embedded log's record chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogCompression {
    None,
    #[default]
    Lz4,
}

fn default_retention_max_bytes() -> u64 {
    2 * 1024 * 1024 * 1024
}
fn default_retention_max_age_secs() -> u64 {
    7 * 24 * 3600
}
fn default_max_commit_records() -> usize {
    8192
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            retention_max_bytes: default_retention_max_bytes(),
            retention_max_age_secs: default_retention_max_age_secs(),
            max_commit_records: default_max_commit_records(),
            compression: LogCompression::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Passed to librdkafka as-is, for both producer and consumer (they win
    /// over Sluice's own settings, so `acks` etc. can be changed knowingly).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Create the topics at startup when they are missing.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions for topics Sluice creates. Forwarder replicas beyond this
    /// number sit idle.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// Upper bound for one publish (`message.timeout.ms`); past it the ingress
    /// answers 503.
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}
fn default_topic() -> String {
    "sluice.events".into()
}
fn default_dead_letter_topic() -> String {
    "sluice.events.dlq".into()
}
fn default_group_id() -> String {
    "sluice-forwarder".into()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    6
}
fn default_replication_factor() -> i32 {
    1
}
fn default_publish_timeout_ms() -> u64 {
    10_000
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: default_brokers(),
            topic: default_topic(),
            dead_letter_topic: default_dead_letter_topic(),
            group_id: default_group_id(),
            properties: BTreeMap::new(),
            create_topics: true,
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            publish_timeout_ms: default_publish_timeout_ms(),
        }
    }
}

/// Sources, in the vocabulary of the PostHog / Amplitude connector docs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connectors {
    #[serde(default)]
    pub posthog: PosthogConnector,
    #[serde(default)]
    pub amplitude: AmplitudeConnector,
    #[serde(default)]
    pub webhooks: Vec<WebhookSource>,
}

/// A Brevo list and the rules that put contacts on it or take them off.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListRule {
    /// Brevo list id.
    pub id: i64,
    /// A name for logs and `sluice map` output.
    #[serde(default)]
    pub name: String,
    /// Source event names that add the contact.
    #[serde(default)]
    pub add_on_events: Vec<String>,
    /// Source event names that remove the contact.
    #[serde(default)]
    pub remove_on_events: Vec<String>,
    /// User property that, when set truthy, adds the contact, and when set
    /// falsy (false, 0, "", null), removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_property: Option<String>,
}

/// How one source's events become Brevo calls: a view over the mapping keys
/// every connector carries (`event_filters`, `event_mapping`,
/// `property_mapping`, `lists`), so the forwarder treats all sources alike.
#[derive(Debug, Clone, Copy)]
pub struct Mapping<'a> {
    pub event_filters: &'a [String],
    pub event_mapping: &'a BTreeMap<String, String>,
    pub property_mapping: &'a BTreeMap<String, String>,
    pub lists: &'a [ListRule],
}

/// Brevo's rule for event names and property keys.
pub fn is_brevo_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Mapping<'_> {
    /// Refuse mappings Brevo would reject on every event; the error names the
    /// field below the connector and says what is wrong.
    fn validate(&self) -> Result<(), (String, String)> {
        for (from, to) in self.event_mapping {
            if !is_brevo_name(to) {
                return Err((
                    format!("event_mapping.{from}"),
                    format!("{to:?} is not a Brevo event name (1-255 characters of [A-Za-z0-9_-])"),
                ));
            }
        }
        for (from, to) in self.property_mapping {
            if to.is_empty() || to.len() > 255 {
                return Err((
                    format!("property_mapping.{from}"),
                    "the Brevo attribute name must be 1-255 characters".into(),
                ));
            }
        }
        for (i, l) in self.lists.iter().enumerate() {
            if l.id <= 0 {
                return Err((format!("lists[{i}].id"), "Brevo list ids are positive integers".into()));
            }
            if l.add_on_events.is_empty() && l.remove_on_events.is_empty() && l.when_property.is_none() {
                return Err((
                    format!("lists[{i}]"),
                    "a list rule needs add_on_events, remove_on_events or when_property".into(),
                ));
            }
        }
        Ok(())
    }
}

macro_rules! mapping_view {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn mapping(&self) -> Mapping<'_> {
                Mapping {
                    event_filters: &self.event_filters,
                    event_mapping: &self.event_mapping,
                    property_mapping: &self.property_mapping,
                    lists: &self.lists,
                }
            }
        }
    )*};
}
mapping_view!(PosthogConnector, AmplitudeConnector, WebhookSource);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosthogConnector {
    /// `false` unmounts the PostHog routes (404) so a deployment that takes
    /// only other sources need not configure tokens for this one.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Accepted project tokens (`phc_...`). Empty means open mode.
    #[serde(default)]
    pub project_tokens: Vec<Secret>,
    /// Allow-list of source event names; empty forwards everything.
    #[serde(default)]
    pub event_filters: Vec<String>,
    /// Source event name → Brevo event name.
    #[serde(default)]
    pub event_mapping: BTreeMap<String, String>,
    /// User property → Brevo contact attribute (`$name: FIRSTNAME`);
    /// `field_mapping` is accepted as a synonym.
    #[serde(default, alias = "field_mapping")]
    pub property_mapping: BTreeMap<String, String>,
    /// Brevo lists and their membership rules.
    #[serde(default)]
    pub lists: Vec<ListRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmplitudeConnector {
    /// `false` unmounts the Amplitude routes (404) so a deployment that takes
    /// only other sources need not configure keys for this one.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Accepted API keys. Empty means open mode.
    #[serde(default)]
    pub api_keys: Vec<Secret>,
    /// Same `insert_id` within this window is a duplicate (Amplitude: 7 days).
    #[serde(default = "default_insert_id_window_secs")]
    pub dedup_window_secs: u64,
    /// Bound on remembered insert_ids; the oldest are forgotten first.
    #[serde(default = "default_dedup_max_entries")]
    pub dedup_max_entries: usize,
    /// Per-user / per-device events-per-second throttle; 0 disables it
    /// (the default). Amplitude's documented threshold is 30.
    #[serde(default)]
    pub eps_threshold: u32,
    /// Allow-list of source event names; empty forwards everything.
    #[serde(default)]
    pub event_filters: Vec<String>,
    /// Source event name → Brevo event name.
    #[serde(default)]
    pub event_mapping: BTreeMap<String, String>,
    /// User property → Brevo contact attribute (`$name: FIRSTNAME`);
    /// `field_mapping` is accepted as a synonym.
    #[serde(default, alias = "field_mapping")]
    pub property_mapping: BTreeMap<String, String>,
    /// Brevo lists and their membership rules.
    #[serde(default)]
    pub lists: Vec<ListRule>,
}

impl Default for PosthogConnector {
    fn default() -> Self {
        PosthogConnector {
            enabled: true,
            project_tokens: Vec::new(),
            event_filters: Vec::new(),
            event_mapping: BTreeMap::new(),
            property_mapping: BTreeMap::new(),
            lists: Vec::new(),
        }
    }
}

fn default_insert_id_window_secs() -> u64 {
    7 * 24 * 3600
}
fn default_dedup_max_entries() -> usize {
    1_000_000
}

impl Default for AmplitudeConnector {
    fn default() -> Self {
        AmplitudeConnector {
            enabled: true,
            api_keys: Vec::new(),
            dedup_window_secs: default_insert_id_window_secs(),
            dedup_max_entries: default_dedup_max_entries(),
            eps_threshold: 0,
            event_filters: Vec::new(),
            event_mapping: BTreeMap::new(),
            property_mapping: BTreeMap::new(),
            lists: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookScheme {
    /// `Stripe-Signature: t=...,v1=...`.
    Stripe,
    /// Standard Webhooks / Svix: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
}

/// JSON pointers (RFC 6901, `/data/email`) that find a Standard Webhooks
/// event's facts in its body. An empty pointer means "not configured".
/// Stripe events have a fixed shape and ignore these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookPointers {
    /// Event name (`invoice.paid`); a body without it is refused with 400.
    #[serde(default = "default_ptr_type")]
    pub r#type: String,
    /// Event id; the `webhook-id` header is used when absent or empty.
    #[serde(default)]
    pub id: String,
    /// When the event happened: RFC 3339 text or Unix seconds. The signed
    /// `webhook-timestamp` (the delivery attempt) is used when absent.
    #[serde(default = "default_ptr_timestamp")]
    pub timestamp: String,
    #[serde(default = "default_ptr_email")]
    pub email: String,
    /// The sender's user id for the person (text or number).
    #[serde(default)]
    pub distinct_id: String,
}

fn default_ptr_type() -> String {
    "/type".into()
}
fn default_ptr_timestamp() -> String {
    "/timestamp".into()
}
fn default_ptr_email() -> String {
    "/data/email".into()
}

impl Default for WebhookPointers {
    fn default() -> Self {
        WebhookPointers {
            r#type: default_ptr_type(),
            id: String::new(),
            timestamp: default_ptr_timestamp(),
            email: default_ptr_email(),
            distinct_id: String::new(),
        }
    }
}

impl WebhookPointers {
    fn all(&self) -> [(&'static str, &str); 5] {
        [
            ("type", &self.r#type),
            ("id", &self.id),
            ("timestamp", &self.timestamp),
            ("email", &self.email),
            ("distinct_id", &self.distinct_id),
        ]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSource {
    /// Served at `POST /webhooks/{name}`.
    pub name: String,
    pub scheme: WebhookScheme,
    /// Signing secrets; several at once for zero-downtime rotation.
    pub secrets: Vec<Secret>,
    /// Accepted difference between the signed timestamp and the server
    /// clock, both directions (replay protection). At least 1.
    #[serde(default = "default_tolerance_secs")]
    pub tolerance_secs: u64,
    /// Larger bodies are refused with 413 before verification.
    #[serde(default = "default_webhook_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Same event id within this window is answered 2xx and not republished
    /// (Stripe retries for three days).
    #[serde(default = "default_webhook_dedup_window_secs")]
    pub dedup_window_secs: u64,
    /// Bound on remembered event ids (about 150 bytes each); the oldest are
    /// forgotten first. Size it to the events this source sends per window.
    #[serde(default = "default_webhook_dedup_max_entries")]
    pub dedup_max_entries: usize,
    #[serde(default)]
    pub pointers: WebhookPointers,
    /// Allow-list of source event names; empty forwards everything.
    #[serde(default)]
    pub event_filters: Vec<String>,
    /// Source event name → Brevo event name.
    #[serde(default)]
    pub event_mapping: BTreeMap<String, String>,
    /// User property → Brevo contact attribute (`$name: FIRSTNAME`);
    /// `field_mapping` is accepted as a synonym.
    #[serde(default, alias = "field_mapping")]
    pub property_mapping: BTreeMap<String, String>,
    /// Brevo lists and their membership rules.
    #[serde(default)]
    pub lists: Vec<ListRule>,
}

fn default_tolerance_secs() -> u64 {
    300
}
fn default_webhook_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_webhook_dedup_window_secs() -> u64 {
    72 * 3600
}
fn default_webhook_dedup_max_entries() -> usize {
    100_000
}

/// Brevo plan presets for the rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BrevoPlan {
    #[default]
    General,
    Professional,
    Enterprise,
}

/// A rate budget: both bounds apply at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateBudget {
    pub per_second: f64,
    pub per_hour: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<RateBudget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contacts: Option<RateBudget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<RateBudget>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrevoConfig {
    /// Without a key the forwarder runs dry: it logs the requests it would send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    #[serde(default = "default_brevo_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub plan: BrevoPlan,
    #[serde(default)]
    pub rate_limits: RateOverrides,
    /// Flush a partly filled batch after this long.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Events per `/v3/events/batch` request (Brevo: at most 200).
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
    /// Bytes per batch request (Brevo: at most 512 KB).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Envelope ids remembered to suppress redelivered duplicates.
    #[serde(default = "default_forward_dedup_entries")]
    pub dedup_max_entries: usize,
    /// How long an envelope id is remembered after Brevo accepted it.
    #[serde(default = "default_forward_dedup_window_secs")]
    pub dedup_window_secs: u64,
    /// Independent delivery lanes. Users are hashed onto lanes; a lane sends
    /// one request at a time, so one user's calls keep their order while
    /// other lanes use the rate budget. Default: one lane per request per
    /// second of the events budget (10 on the general plan), so a token that
    /// comes back always finds a lane ready to use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// How late after sending a request Brevo may count it against the rate
    /// limit. A rate-limit token's period starts at Brevo's answer, or this
    /// long after the send when that comes first. Unset (the default): at the
    /// answer; Brevo cannot count a request after answering it, so it never
    /// sees more than the budget in any window, at the price of one round
    /// trip per token per second (about 1% of the budget per 10 ms). Set
    /// it (e.g. 20) when round trips are long but steady, to spend more of
    /// the budget; a send-to-count delay that varies by more risks 429s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_slack_ms: Option<u64>,
    /// Brevo list that every contact upserted through `/v3/contacts/import`
    /// joins when no `lists` rule names one (Brevo's import requires a list).
    /// Without it, such upserts go one by one through `POST /v3/contacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_list_id: Option<i64>,
}

fn default_brevo_base_url() -> String {
    "https://api.brevo.com/v3".into()
}
fn default_linger_ms() -> u64 {
    1000
}
fn default_max_batch_events() -> usize {
    200
}
fn default_max_batch_bytes() -> usize {
    512 * 1000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_forward_dedup_entries() -> usize {
    100_000
}
fn default_forward_dedup_window_secs() -> u64 {
    24 * 3600
}

impl Default for BrevoConfig {
    fn default() -> Self {
        BrevoConfig {
            api_key: None,
            base_url: default_brevo_base_url(),
            plan: BrevoPlan::General,
            rate_limits: RateOverrides::default(),
            linger_ms: default_linger_ms(),
            max_batch_events: default_max_batch_events(),
            max_batch_bytes: default_max_batch_bytes(),
            request_timeout_ms: default_request_timeout_ms(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            dedup_max_entries: default_forward_dedup_entries(),
            dedup_window_secs: default_forward_dedup_window_secs(),
            concurrency: None,
            rate_limit_slack_ms: None,
            default_list_id: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter (`info`, `debug`, `sluice=debug,info`). `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    /// Log every mapped Brevo request (the connector docs' `debug`).
    #[serde(default)]
    pub debug: bool,
}

fn default_log_level() -> String {
    "info".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: default_log_level(), format: LogFormat::Json, debug: false }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: invalid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("{file}: {key}: environment variable {var} is not set")]
    MissingVar { file: String, key: String, var: String },
    #[error("{file}: {key}: {message}")]
    Invalid { file: String, key: String, message: String },
}

impl Config {
    /// Load a file, interpolate `${VAR}` from the environment, validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_yaml(&text, &path.display().to_string(), &|name| std::env::var(name).ok())
    }

    /// Parse YAML text; `lookup` resolves `${VAR}` references.
    pub fn from_yaml(text: &str, file: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut value: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| ConfigError::Yaml { path: file.to_string(), message: e.to_string() })?;
        if value.is_null() {
            value = serde_yaml::Value::Mapping(Default::default());
        }
        interpolate(&mut value, "", file, lookup)?;
        let cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid { file: file.to_string(), key, message: e.into_inner().to_string() }
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid { file: file.into(), key: key.into(), message };
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.connectors.webhooks.iter().enumerate() {
            let key = format!("connectors.webhooks[{i}]");
            if w.name.is_empty() || !w.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(&format!("{key}.name"), "must be non-empty [A-Za-z0-9_-]".into()));
            }
            if !names.insert(w.name.clone()) {
                return Err(invalid(&format!("{key}.name"), format!("duplicate webhook source {:?}", w.name)));
            }
            if w.secrets.is_empty() || w.secrets.iter().any(Secret::is_empty) {
                return Err(invalid(&format!("{key}.secrets"), "at least one non-empty secret is required".into()));
            }
            for (j, s) in w.secrets.iter().enumerate() {
                if let Err(e) = crate::ingress::webhook::signature::SigningKey::new(w.scheme, s.expose()) {
                    return Err(invalid(&format!("{key}.secrets[{j}]"), e.to_string()));
                }
            }
            if w.tolerance_secs == 0 {
                return Err(invalid(&format!("{key}.tolerance_secs"), "must be at least 1".into()));
            }
            if w.max_body_bytes == 0 {
                return Err(invalid(&format!("{key}.max_body_bytes"), "must be at least 1".into()));
            }
            for (field, ptr) in w.pointers.all() {
                if !ptr.is_empty() && !ptr.starts_with('/') {
                    return Err(invalid(
                        &format!("{key}.pointers.{field}"),
                        format!("{ptr:?} is not a JSON pointer: write it as /a/b (RFC 6901), or leave it empty"),
                    ));
                }
            }
        }
        if self.brevo.max_batch_events == 0 || self.brevo.max_batch_events > 200 {
            return Err(invalid("brevo.max_batch_events", "must be 1..=200 (Brevo's batch limit)".into()));
        }
        if self.brevo.max_batch_bytes == 0 || self.brevo.max_batch_bytes > 512 * 1024 {
            return Err(invalid("brevo.max_batch_bytes", "must be 1..=524288 (Brevo's 512 KB limit)".into()));
        }
        if self.brevo.concurrency.is_some_and(|c| c == 0 || c > 256) {
            return Err(invalid("brevo.concurrency", "must be 1..=256".into()));
        }
        for (class, budget) in [
            ("events", &self.brevo.rate_limits.events),
            ("contacts", &self.brevo.rate_limits.contacts),
            ("other", &self.brevo.rate_limits.other),
        ] {
            if let Some(b) = budget {
                if !(b.per_second > 0.0 && b.per_hour >= 1.0 && b.per_second.is_finite() && b.per_hour.is_finite()) {
                    return Err(invalid(
                        &format!("brevo.rate_limits.{class}"),
                        "per_second must be > 0 and per_hour >= 1".into(),
                    ));
                }
            }
        }
        let mut mappings = vec![
            ("connectors.posthog".to_string(), self.connectors.posthog.mapping()),
            ("connectors.amplitude".to_string(), self.connectors.amplitude.mapping()),
        ];
        for (i, w) in self.connectors.webhooks.iter().enumerate() {
            mappings.push((format!("connectors.webhooks[{i}]"), w.mapping()));
        }
        for (key, m) in mappings {
            m.validate().map_err(|(field, message)| invalid(&format!("{key}.{field}"), message))?;
        }
        if self.bus.kafka.partitions < 1 {
            return Err(invalid("bus.kafka.partitions", "must be at least 1".into()));
        }
        if self.open_mode() && !self.server.listen.ip().is_loopback() && !self.server.allow_open_mode {
            return Err(invalid(
                "server.listen",
                format!(
                    "open mode (no connectors.posthog.project_tokens / connectors.amplitude.api_keys) on non-loopback address {} would accept anyone's events; configure tokens, disable the unused connector (enabled: false) or set server.allow_open_mode: true",
                    self.server.listen
                ),
            ));
        }
        Ok(())
    }

    /// True when an enabled PostHog or Amplitude connector accepts any token.
    pub fn open_mode(&self) -> bool {
        let c = &self.connectors;
        (c.posthog.enabled && c.posthog.project_tokens.is_empty())
            || (c.amplitude.enabled && c.amplitude.api_keys.is_empty())
    }

    /// The effective configuration as YAML, secrets redacted.
    pub fn redacted_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Every secret and token, so tests and log scrubbing can look for them.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        out.extend(self.connectors.posthog.project_tokens.iter().map(Secret::expose));
        out.extend(self.connectors.amplitude.api_keys.iter().map(Secret::expose));
        for w in &self.connectors.webhooks {
            out.extend(w.secrets.iter().map(Secret::expose));
        }
        if let Some(k) = &self.brevo.api_key {
            out.push(k.expose());
        }
        out.retain(|s| !s.is_empty());
        out
    }
}

/// Replace `${VAR}` in every string value, naming the key of a missing one.
fn interpolate(
    v: &mut serde_yaml::Value,
    path: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        serde_yaml::Value::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let end = after.find('}').ok_or_else(|| ConfigError::Invalid {
                    file: file.into(),
                    key: path.into(),
                    message: "unterminated ${".into(),
                })?;
                let name = &after[..end];
                let val = lookup(name).ok_or_else(|| ConfigError::MissingVar {
                    file: file.into(),
                    key: path.into(),
                    var: name.into(),
                })?;
                out.push_str(&val);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        serde_yaml::Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), file, lookup)?;
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let child = if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
                interpolate(item, &child, file, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "POSTHOG_PROJECT_TOKEN" => Some("phc_test".into()),
            "AMPLITUDE_API_KEY" => Some("amp_key".into()),
            "STRIPE_WEBHOOK_SECRET" => Some("whsec_abc".into()),
            "BREVO_API_KEY" => Some("xkeysib-123".into()),
            _ => None,
        }
    }

    const FULL: &str = r#"
server:
  listen: "127.0.0.1:8080"
bus:
  kind: embedded
  path: ./sluice-data
  kafka:
    brokers: "127.0.0.1:9092"
    topic: sluice.events
    dead_letter_topic: sluice.events.dlq
    group_id: sluice-forwarder
    properties: {}
connectors:
  posthog:
    project_tokens: ["${POSTHOG_PROJECT_TOKEN}"]
  amplitude:
    api_keys: ["${AMPLITUDE_API_KEY}"]
  webhooks:
    - name: stripe
      scheme: stripe
      secrets: ["${STRIPE_WEBHOOK_SECRET}"]
brevo:
  api_key: "${BREVO_API_KEY}"
  base_url: https://api.brevo.com/v3
"#;

    #[test]
    fn the_documented_keys_load_and_interpolate() {
        let c = Config::from_yaml(FULL, "t.yaml", &env).unwrap();
        assert_eq!(c.connectors.posthog.project_tokens[0].expose(), "phc_test");
        assert_eq!(c.connectors.webhooks[0].scheme, WebhookScheme::Stripe);
        assert_eq!(c.brevo.api_key.as_ref().unwrap().expose(), "xkeysib-123");
        assert_eq!(c.bus.kafka.dead_letter_topic, "sluice.events.dlq");
        assert!(!c.open_mode());
    }

    #[test]
    fn missing_variable_is_named_with_its_key() {
        let err = Config::from_yaml(FULL, "t.yaml", &|_| None).unwrap_err().to_string();
        assert!(err.contains("POSTHOG_PROJECT_TOKEN"), "{err}");
        assert!(err.contains("connectors.posthog.project_tokens[0]"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let err = Config::from_yaml("server:\n  lisen: 1\n", "t.yaml", &env).unwrap_err().to_string();
        assert!(err.contains("server.lisen") && err.contains("unknown field"), "{err}");
        let err = Config::from_yaml("bus:\n  kafka:\n    topik: x\n", "t.yaml", &env).unwrap_err().to_string();
        assert!(err.contains("bus.kafka.topik"), "{err}");
    }

    #[test]
    fn embedded_log_compression_is_lz4_unless_set_to_none() {
        assert_eq!(Config::from_yaml("", "t.yaml", &env).unwrap().bus.embedded.compression, LogCompression::Lz4);
        let c = Config::from_yaml("bus:\n  embedded:\n    compression: none\n", "t.yaml", &env).unwrap();
        assert_eq!(c.bus.embedded.compression, LogCompression::None);
        let err = Config::from_yaml("bus:\n  embedded:\n    compression: zstd\n", "t.yaml", &env).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("bus.embedded.compression") && err.contains("zstd"), "{err}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_yaml("", "t.yaml", &env).unwrap();
        assert_eq!(c.server.listen, default_listen());
        assert_eq!(c.bus.kind, BusKind::Embedded);
        assert!(c.open_mode());
        assert!(c.brevo.api_key.is_none());
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_yaml() {
        let c = Config::from_yaml(FULL, "t.yaml", &env).unwrap();
        let dbg = format!("{c:?}");
        let yaml = c.redacted_yaml();
        for s in c.secrets() {
            assert!(!dbg.contains(s), "{s} leaked into Debug");
            assert!(!yaml.contains(s), "{s} leaked into YAML");
        }
        assert!(yaml.contains("<redacted>"));
    }

    #[test]
    fn a_disabled_connector_does_not_make_a_public_address_open() {
        let env = |_: &str| None;
        let yaml = "server:\n  listen: 0.0.0.0:8080\nconnectors:\n  posthog:\n    project_tokens: [phc_a]\n";
        let err = Config::from_yaml(yaml, "t.yaml", &env).unwrap_err().to_string();
        assert!(err.contains("open mode"), "{err}");
        let yaml = format!("{yaml}  amplitude:\n    enabled: false\n");
        let c = Config::from_yaml(&yaml, "t.yaml", &env).unwrap();
        assert!(!c.open_mode() && c.connectors.posthog.enabled && !c.connectors.amplitude.enabled);
    }

    #[test]
    fn open_mode_on_public_address_needs_explicit_permission() {
        let err = Config::from_yaml("server:\n  listen: 0.0.0.0:8080\n", "t.yaml", &env).unwrap_err().to_string();
        assert!(err.contains("open mode"), "{err}");
        Config::from_yaml("server:\n  listen: 0.0.0.0:8080\n  allow_open_mode: true\n", "t.yaml", &env).unwrap();
    }

    #[test]
    fn webhook_sources_are_validated() {
        let yaml = "connectors:\n  webhooks:\n    - {name: a, scheme: stripe, secrets: []}\n";
        let err = Config::from_yaml(yaml, "t.yaml", &env).unwrap_err().to_string();
        assert!(err.contains("connectors.webhooks[0].secrets"), "{err}");
        let yaml = "connectors:\n  webhooks:\n    - {name: a, scheme: standard, secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, 'whsec_not base64']}\n";
        let err = Config::from_yaml(yaml, "t.yaml", &env).unwrap_err().to_string();
        assert!(err.contains("connectors.webhooks[0].secrets[1]") && err.contains("base64"), "{err}");
        assert!(!err.contains("whsec_not"), "the secret itself is not echoed: {err}");
        let yaml = "connectors:\n  webhooks:\n    - {name: a, scheme: standard, secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw], pointers: {email: data.email}}\n";
        let err = Config::from_yaml(yaml, "t.yaml", &env).unwrap_err().to_string();
        assert!(err.contains("connectors.webhooks[0].pointers.email"), "{err}");
        let yaml = "connectors:\n  webhooks:\n    - {name: a, scheme: stripe, secrets: [x], tolerance_secs: 0}\n";
        let err = Config::from_yaml(yaml, "t.yaml", &env).unwrap_err().to_string();
        assert!(err.contains("connectors.webhooks[0].tolerance_secs"), "{err}");
        let yaml = "connectors:\n  webhooks:\n    - {name: a, scheme: standard, secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]}\n";
        let w = &Config::from_yaml(yaml, "t.yaml", &env).unwrap().connectors.webhooks[0];
        assert_eq!((w.tolerance_secs, w.max_body_bytes, w.dedup_window_secs), (300, 1024 * 1024, 72 * 3600));
        assert_eq!((w.pointers.r#type.as_str(), w.pointers.email.as_str()), ("/type", "/data/email"));
    }
}
