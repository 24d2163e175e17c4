//! How a sitelog component connects to Kafka: the security keys of `[kafka]`, shared by the
//! collector's and the processor's config (both flatten [`KafkaSecurity`] into their own
//! `[kafka]` table), with their validation and the secret policy.
//!
//! Plain data and pure functions only: no client, no I/O. The crates that own a Kafka client
//! read the password ([`KafkaSecurity::sasl_password`] takes the environment value and a file
//! reader) and ask librdkafka which features it was built with ([`check_supported`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable holding the SASL password; wins over `sasl_password_file`.
pub const PASSWORD_ENV: &str = "SITELOG_KAFKA_PASSWORD";

pub const PROTOCOLS: &[&str] = &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
/// SASL mechanisms sitelog supports: librdkafka's own PLAIN and SCRAM (no Cyrus SASL, so no
/// GSSAPI/Kerberos).
pub const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
pub const COMPRESSIONS: &[&str] = &["none", "lz4", "zstd", "snappy", "gzip"];

/// The security keys of `[kafka]` (flattened: they are written directly under `[kafka]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    /// CA certificate(s) (PEM) the brokers' certificates must chain to; default: the
    /// system's trust store.
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificate and key (PEM), for clusters that want mutual TLS.
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// File holding the SASL password (its first line). `SITELOG_KAFKA_PASSWORD` wins over it.
    pub sasl_password_file: Option<PathBuf>,
    /// Never accepted: present only so that a password written into the config is refused
    /// with a message saying where it belongs, instead of "unknown field".
    #[serde(skip_serializing)]
    pub sasl_password: Option<Refused>,
}

/// Any value, remembered only as "it was there".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl<'de> Deserialize<'de> for Refused {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Refused)
    }
}

impl Default for KafkaSecurity {
    fn default() -> Self {
        KafkaSecurity {
            security_protocol: "plaintext".into(),
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            sasl_password: None,
        }
    }
}

impl KafkaSecurity {
    pub fn uses_tls(&self) -> bool {
        matches!(self.security_protocol.as_str(), "ssl" | "sasl_ssl")
    }

    pub fn uses_sasl(&self) -> bool {
        self.security_protocol.starts_with("sasl_")
    }

    /// Checks the keys against each other; the error names the key (`kafka.…`).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.sasl_password.is_some() {
            return Err((
                "kafka.sasl_password",
                format!("secrets do not belong in the config file; use {PASSWORD_ENV} or kafka.sasl_password_file"),
            ));
        }
        if !PROTOCOLS.contains(&self.security_protocol.as_str()) {
            return Err((
                "kafka.security_protocol",
                format!("{:?} is not plaintext, ssl, sasl_plaintext or sasl_ssl", self.security_protocol),
            ));
        }
        if self.uses_sasl() {
            let Some(m) = &self.sasl_mechanism else {
                return Err((
                    "kafka.sasl_mechanism",
                    format!("security_protocol {:?} needs sasl_mechanism and sasl_username", self.security_protocol),
                ));
            };
            if !MECHANISMS.contains(&m.as_str()) {
                return Err((
                    "kafka.sasl_mechanism",
                    format!("{m:?} is not supported (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"),
                ));
            }
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                return Err((
                    "kafka.sasl_username",
                    format!("security_protocol {:?} needs sasl_username", self.security_protocol),
                ));
            }
        } else {
            for (key, set) in [
                ("kafka.sasl_mechanism", self.sasl_mechanism.is_some()),
                ("kafka.sasl_username", self.sasl_username.is_some()),
                ("kafka.sasl_password_file", self.sasl_password_file.is_some()),
            ] {
                if set {
                    return Err((
                        key,
                        format!(
                            "is only used with security_protocol sasl_plaintext or sasl_ssl, not {:?}",
                            self.security_protocol
                        ),
                    ));
                }
            }
        }
        if !self.uses_tls() {
            for (key, set) in [
                ("kafka.ssl_ca_location", self.ssl_ca_location.is_some()),
                ("kafka.ssl_certificate_location", self.ssl_certificate_location.is_some()),
                ("kafka.ssl_key_location", self.ssl_key_location.is_some()),
            ] {
                if set {
                    return Err((
                        key,
                        format!(
                            "is only used with security_protocol ssl or sasl_ssl, not {:?}",
                            self.security_protocol
                        ),
                    ));
                }
            }
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err((
                "kafka.ssl_key_location",
                "ssl_certificate_location and ssl_key_location go together (mutual TLS)".into(),
            ));
        }
        Ok(())
    }

    /// librdkafka properties for these keys, without the password.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Path| p.display().to_string();
        let mut out = vec![("security.protocol", self.security_protocol.clone())];
        if let Some(p) = &self.ssl_ca_location {
            out.push(("ssl.ca.location", path(p)));
        }
        if let Some(p) = &self.ssl_certificate_location {
            out.push(("ssl.certificate.location", path(p)));
        }
        if let Some(p) = &self.ssl_key_location {
            out.push(("ssl.key.location", path(p)));
        }
        if let Some(m) = &self.sasl_mechanism {
            out.push(("sasl.mechanism", m.clone()));
        }
        if let Some(u) = &self.sasl_username {
            out.push(("sasl.username", u.clone()));
        }
        out
    }

    /// The SASL password, when SASL is used: `env` (the value of [`PASSWORD_ENV`]) wins, then
    /// the first line of `sasl_password_file` read with `read`. Never from the config itself.
    pub fn sasl_password(
        &self,
        env: Option<String>,
        read: impl FnOnce(&Path) -> std::io::Result<String>,
    ) -> Result<Option<String>, String> {
        if !self.uses_sasl() {
            return Ok(None);
        }
        if let Some(p) = env {
            return Ok(Some(p));
        }
        match &self.sasl_password_file {
            Some(file) => read(file)
                .map(|s| Some(s.lines().next().unwrap_or_default().to_owned()))
                .map_err(|e| format!("kafka.sasl_password_file {}: {e}", file.display())),
            None => Err(format!(
                "kafka.sasl_mechanism {}: SASL needs a password: set {PASSWORD_ENV} or kafka.sasl_password_file",
                self.sasl_mechanism.as_deref().unwrap_or_default()
            )),
        }
    }
}

/// librdkafka error codes (`rd_kafka_resp_err_t`) that [`refusal`] recognises.
const ERR_SSL: i32 = -181;
const ERR_AUTHENTICATION: i32 = -169;
const ERR_SASL_AUTHENTICATION_FAILED: i32 = 58;

/// Explains a Kafka client error that no retry can fix — the broker or the network path
/// refuses this client's configuration: wrong password, untrusted certificate, plaintext
/// against a TLS listener. `code` is librdkafka's error code, `reason` its message. `None`
/// for everything else (a broker that is down is transient).
pub fn refusal(code: Option<i32>, reason: &str) -> Option<String> {
    let what = match code {
        Some(ERR_AUTHENTICATION | ERR_SASL_AUTHENTICATION_FAILED) => {
            "SASL authentication failed (wrong kafka.sasl_username or password?)"
        }
        Some(ERR_SSL) if reason.contains("certificate verify failed") => {
            "the broker's TLS certificate is not trusted (kafka.ssl_ca_location)"
        }
        Some(ERR_SSL) => "TLS handshake with the broker failed (kafka.security_protocol, kafka.ssl_*)",
        // librdkafka's own diagnosis when a plaintext client meets a TLS listener.
        _ if reason.contains("incorrect security.protocol") => {
            "the connection closed during the first request: the broker's listener probably expects TLS \
             (kafka.security_protocol)"
        }
        _ => return None,
    };
    Some(format!("Kafka refused the connection: {what}: {reason}"))
}

/// Whether a librdkafka log line says the connection was dropped during the very first
/// request (ApiVersion): what a TLS listener does to a plaintext client. librdkafka reports
/// it as a log line only (its error callback just says all brokers are down), so the
/// clients count these lines on non-TLS connections and give up after [`PLAINTEXT_TO_TLS_LIMIT`].
pub fn dropped_in_first_request(log_message: &str) -> bool {
    log_message.contains("in state APIVERSION_QUERY")
        && (log_message.contains("reset by peer") || log_message.contains("Disconnected"))
}

/// How many [`dropped_in_first_request`] lines in a row mean "this listener expects TLS" (a
/// broker that is down refuses the connection instead; one that restarts does it once).
pub const PLAINTEXT_TO_TLS_LIMIT: u32 = 2;

/// The message for a plaintext client whose first requests a listener keeps dropping.
pub fn plaintext_to_tls_message(protocol: &str, log_message: &str) -> String {
    format!(
        "Kafka refused the connection: the broker's listener dropped the first request \
         {PLAINTEXT_TO_TLS_LIMIT} times, as a TLS listener does to a plaintext client: it probably expects TLS \
         (kafka.security_protocol is {protocol:?}; use ssl or sasl_ssl): {log_message}"
    )
}

/// Checks that the Kafka client library was built with what the config asks for.
/// `builtin` is librdkafka's `builtin.features` (comma-separated, e.g. `gzip,snappy,ssl,
/// sasl,sasl_scram,lz4,zstd`); `compression` is the producer's codec, if any. The error names
/// the key.
pub fn check_supported(
    sec: &KafkaSecurity,
    compression: Option<&str>,
    builtin: &str,
) -> Result<(), (&'static str, String)> {
    let has = |f: &str| builtin.split(',').any(|b| b.trim() == f);
    let missing = |key: &'static str, value: &str, feature: &str| {
        Err((
            key,
            format!(
                "{value:?} needs librdkafka's {feature:?} feature, which this build lacks (builtin.features: {builtin})"
            ),
        ))
    };
    if sec.uses_tls() && !has("ssl") {
        return missing("kafka.security_protocol", &sec.security_protocol, "ssl");
    }
    if sec.uses_sasl() {
        let m = sec.sasl_mechanism.as_deref().unwrap_or_default();
        let feature = if m.starts_with("SCRAM") { "sasl_scram" } else { "sasl" };
        if !has(feature) {
            return missing("kafka.sasl_mechanism", m, feature);
        }
    }
    if let Some(c) = compression {
        if !COMPRESSIONS.contains(&c) {
            return Err(("kafka.compression", format!("{c:?} is not none, lz4, zstd, snappy or gzip")));
        }
        let feature = match c {
            "gzip" => "gzip",
            "snappy" => "snappy",
            "lz4" => "lz4",
            "zstd" => "zstd",
            _ => return Ok(()),
        };
        if !has(feature) {
            return missing("kafka.compression", c, feature);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl_ssl() -> KafkaSecurity {
        KafkaSecurity {
            security_protocol: "sasl_ssl".into(),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("u".into()),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_the_key() {
        assert_eq!(sasl_ssl().validate(), Ok(()));
        let key = |s: KafkaSecurity| s.validate().unwrap_err().0;
        assert_eq!(
            key(KafkaSecurity { security_protocol: "tls".into(), ..Default::default() }),
            "kafka.security_protocol"
        );
        assert_eq!(key(KafkaSecurity { sasl_mechanism: None, ..sasl_ssl() }), "kafka.sasl_mechanism");
        assert_eq!(key(KafkaSecurity { sasl_mechanism: Some("GSSAPI".into()), ..sasl_ssl() }), "kafka.sasl_mechanism");
        assert_eq!(key(KafkaSecurity { sasl_username: None, ..sasl_ssl() }), "kafka.sasl_username");
        assert_eq!(key(KafkaSecurity { sasl_password: Some(Refused), ..sasl_ssl() }), "kafka.sasl_password");
        let plain = KafkaSecurity { ssl_ca_location: Some("/ca.pem".into()), ..Default::default() };
        assert_eq!(key(plain), "kafka.ssl_ca_location");
        let plain = KafkaSecurity { sasl_username: Some("u".into()), ..Default::default() };
        assert_eq!(key(plain), "kafka.sasl_username");
    }

    #[test]
    fn password_policy() {
        let no_file = |_: &Path| -> std::io::Result<String> { unreachable!("file read") };
        assert_eq!(sasl_ssl().sasl_password(Some("env".into()), no_file), Ok(Some("env".into())));
        assert!(sasl_ssl().sasl_password(None, no_file).unwrap_err().contains(PASSWORD_ENV));
        let s = KafkaSecurity { sasl_password_file: Some("/pw".into()), ..sasl_ssl() };
        assert_eq!(s.sasl_password(None, |_| Ok("secret\nrest\n".into())), Ok(Some("secret".into())));
        assert_eq!(KafkaSecurity::default().sasl_password(None, no_file), Ok(None));
    }

    #[test]
    fn unsupported_features_are_named() {
        let all = "gzip,snappy,ssl,sasl,sasl_scram,lz4,zstd";
        assert_eq!(check_supported(&sasl_ssl(), Some("zstd"), all), Ok(()));
        let e = check_supported(&sasl_ssl(), None, "gzip,snappy,sasl,lz4").unwrap_err();
        assert_eq!(e.0, "kafka.security_protocol");
        assert!(e.1.contains("\"ssl\""), "{}", e.1);
        let e = check_supported(&sasl_ssl(), None, "ssl,sasl").unwrap_err();
        assert_eq!(e.0, "kafka.sasl_mechanism");
        let e = check_supported(&KafkaSecurity::default(), Some("zstd"), "lz4").unwrap_err();
        assert_eq!(e.0, "kafka.compression");
        assert_eq!(check_supported(&KafkaSecurity::default(), Some("none"), ""), Ok(()));
    }
}
