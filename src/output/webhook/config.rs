//! The WebHook's settings: resolved and checked here from the raw values the command line,
//! environment and config file gave, so a bad one stops the node at startup naming the option.
//! Compiled with or without the `webhook` feature: a build without it still recognises the
//! settings, and says at startup that it cannot deliver.

use std::time::Duration;

use crate::settings::{ConfigError, Secret, check_url};

/// Upstream's WebHook URL when enabled with `SENTRYPEER_WEBHOOK` and no URL: a receiver on this
/// machine. No default may send events (with their whole SIP messages) anywhere else.
pub const DEFAULT_WEBHOOK_URL: &str = "http://localhost:4000/api/events";
/// Upstream's OAuth 2 token endpoint.
pub const DEFAULT_OAUTH2_TOKEN_URL: &str = "https://authz.sentrypeer.com/oauth/token";
/// Upstream's OAuth 2 audience.
pub const DEFAULT_OAUTH2_AUDIENCE: &str = "https://sentrypeer.com/api";
/// Events the WebHook outbox holds by default: about a day of a busy node's probes, a few
/// hundred MB of JSON at most.
pub const DEFAULT_WEBHOOK_OUTBOX_CAP: u64 = 100_000;
/// Dead letters kept by default: a day or so of an endpoint that refuses everything.
pub const DEFAULT_WEBHOOK_DEAD_LETTER_CAP: u64 = 100_000;
/// The most events one WebHook request carries in batch mode: keeps a request well under the
/// body limits of common receivers (events are about 1 KB).
pub const MAX_WEBHOOK_BATCH: u64 = 1000;
/// The longest pause between WebHook retries by default.
pub const DEFAULT_WEBHOOK_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest `--webhook-max-backoff` accepted: a day.
const MAX_WEBHOOK_MAX_BACKOFF_SECS: u64 = 86_400;
/// Where and how the WebHook posts.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub oauth2: Option<OAuth2Config>,
    /// A static `Authorization` header value, when there are no OAuth 2 credentials.
    pub authorization: Option<Secret>,
    /// Events per request: 1 POSTs the event's object (upstream); more POSTs a JSON array.
    pub batch: usize,
    /// Events the outbox holds; beyond it the oldest are dead-lettered.
    pub outbox_cap: u64,
    /// Dead letters kept; beyond it the oldest are deleted.
    pub dead_letter_cap: u64,
    /// The longest pause between retries.
    pub max_backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct OAuth2Config {
    pub client_id: String,
    pub client_secret: Secret,
    pub token_url: String,
    pub audience: String,
}

/// The WebHook settings as given, before they are checked.
#[derive(Debug, Default, Clone)]
pub struct RawWebhookConfig {
    /// `-w`, `SENTRYPEER_WEBHOOK_URL` or the file's `webhook_url`.
    pub url: Option<String>,
    /// `SENTRYPEER_WEBHOOK` is set: enabled with upstream's default URL when none is given.
    pub enabled_by_env: bool,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub token_url: Option<String>,
    pub audience: Option<String>,
    pub authorization: Option<Secret>,
    pub batch: Option<u64>,
    pub outbox_cap: Option<u64>,
    pub dead_letter_cap: Option<u64>,
    pub max_backoff: Option<u64>,
}

impl WebhookConfig {
    /// The WebHook's settings, or `None` when it is off. Settings that are accepted but do
    /// nothing (OAuth 2 credentials with no WebHook) are added to `warnings`.
    pub fn resolve(
        raw: RawWebhookConfig,
        warnings: &mut Vec<String>,
    ) -> Result<Option<WebhookConfig>, ConfigError> {
        let RawWebhookConfig {
            url,
            enabled_by_env,
            client_id,
            client_secret,
            token_url,
            audience,
            authorization,
            batch,
            outbox_cap,
            dead_letter_cap,
            max_backoff,
        } = raw;
        let webhook_url = url.or_else(|| enabled_by_env.then(|| DEFAULT_WEBHOOK_URL.to_string()));
        let token_url = token_url.unwrap_or_else(|| DEFAULT_OAUTH2_TOKEN_URL.into());
        let audience = audience.unwrap_or_else(|| DEFAULT_OAUTH2_AUDIENCE.into());
        let oauth2 = match (client_id, client_secret) {
            // Upstream starts with OAuth 2 credentials and no WebHook: they have no effect.
            (id, secret) if webhook_url.is_none() => {
                if id.is_some() || secret.is_some() {
                    warnings.push(
                        "OAuth 2 credentials (-i/-c) are set but no WebHook URL (-w or \
                         SENTRYPEER_WEBHOOK): they have no effect."
                            .to_string(),
                    );
                }
                None
            }
            (Some(client_id), Some(client_secret)) => {
                check_url("--oauth2-token-url", &token_url)?;
                Some(OAuth2Config {
                    client_id,
                    client_secret,
                    token_url,
                    audience,
                })
            }
            (None, None) => None,
            (Some(id), None) => {
                return Err(ConfigError::new(
                    "-i (--oauth2-client-id)",
                    id,
                    "needs -c (--oauth2-client-secret) too",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "-c (--oauth2-client-secret)",
                    "***",
                    "needs -i (--oauth2-client-id) too",
                ));
            }
        };
        let batch = batch.unwrap_or(1);
        if !(1..=MAX_WEBHOOK_BATCH).contains(&batch) {
            return Err(ConfigError::new(
                "--webhook-batch",
                batch,
                format_args!("expected 1 to {MAX_WEBHOOK_BATCH} events per request"),
            ));
        }
        let outbox_cap = outbox_cap.unwrap_or(DEFAULT_WEBHOOK_OUTBOX_CAP);
        if outbox_cap == 0 {
            return Err(ConfigError::new(
                "--webhook-outbox-cap",
                outbox_cap,
                "the outbox must hold at least one event",
            ));
        }
        let dead_letter_cap = dead_letter_cap.unwrap_or(DEFAULT_WEBHOOK_DEAD_LETTER_CAP);
        if dead_letter_cap == 0 {
            return Err(ConfigError::new(
                "--webhook-dead-letter-cap",
                dead_letter_cap,
                "the dead letters must hold at least one event",
            ));
        }
        let max_backoff = match max_backoff {
            None => DEFAULT_WEBHOOK_MAX_BACKOFF,
            Some(s) if (1..=MAX_WEBHOOK_MAX_BACKOFF_SECS).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                return Err(ConfigError::new(
                    "--webhook-max-backoff",
                    s,
                    format_args!("expected 1 to {MAX_WEBHOOK_MAX_BACKOFF_SECS} seconds"),
                ));
            }
        };
        Ok(match webhook_url {
            Some(url) => {
                check_url("-w (--webhook-url)", &url)?;
                Some(WebhookConfig {
                    url,
                    oauth2,
                    authorization,
                    batch: batch as usize,
                    outbox_cap,
                    dead_letter_cap,
                    max_backoff,
                })
            }
            None => None,
        })
    }
}
