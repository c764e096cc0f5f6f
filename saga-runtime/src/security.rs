//! Connecting to a secured cluster: the security settings of Kafka's Java client and
//! librdkafka (`security.protocol`, `ssl.ca.location`, `sasl.mechanism`, …), checked at start-up
//! and turned into rskafka's TLS and SASL configuration.
//!
//! The password is never a flag (a flag shows in process lists): it comes from
//! `KAFKA_SASL_PASSWORD` or a file, and no `Debug` or log line prints it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rskafka::client::{ClientBuilder, Credentials, SaslConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The environment variable holding the SASL password.
pub const PASSWORD_ENV: &str = "KAFKA_SASL_PASSWORD";

/// How to talk to the brokers (`security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[value(name = "PLAINTEXT")]
    Plaintext,
    /// TLS; mutual TLS with a client certificate.
    #[value(name = "SSL")]
    Ssl,
    /// SASL authentication without TLS.
    #[value(name = "SASL_PLAINTEXT")]
    SaslPlaintext,
    /// SASL authentication over TLS: what managed Kafka services ask for.
    #[value(name = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::config::write_value_name(self, f)
    }
}

/// The SASL mechanism (`sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::config::write_value_name(self, f)
    }
}

/// Security flags every binary accepts. Flatten into its `clap::Parser`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// How to talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    /// [default: PLAINTEXT].
    #[arg(long, global = true, env = "KAFKA_SECURITY_PROTOCOL", value_enum, ignore_case = true)]
    pub security_protocol: Option<SecurityProtocol>,

    /// PEM file with the CA certificates that sign the brokers' certificates
    /// [default: the system's trusted roots].
    #[arg(long, global = true, env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,

    /// PEM file with this client's certificate (and chain), for mutual TLS.
    #[arg(long, global = true, env = "KAFKA_SSL_CERTIFICATE_LOCATION")]
    pub ssl_certificate_location: Option<PathBuf>,

    /// PEM file with the client certificate's private key (unencrypted PKCS#8, PKCS#1 or SEC1).
    #[arg(long, global = true, env = "KAFKA_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<PathBuf>,

    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 [default: PLAIN].
    #[arg(long, global = true, env = "KAFKA_SASL_MECHANISM", value_enum, ignore_case = true)]
    pub sasl_mechanism: Option<SaslMechanism>,

    /// SASL user name.
    #[arg(long, global = true, env = "KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,

    /// File whose first line is the SASL password. Or set KAFKA_SASL_PASSWORD; the password is
    /// never a flag, so it shows in no process list.
    #[arg(long, global = true, env = "KAFKA_SASL_PASSWORD_FILE")]
    pub sasl_password_file: Option<PathBuf>,
}

impl SecurityArgs {
    /// The same settings as flags, for a binary that starts others (`saga-bench`). The password
    /// is not among them: the children inherit `KAFKA_SASL_PASSWORD`, or read the same file.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value]);
            }
        };
        push("--security-protocol", self.security_protocol.map(|p| p.to_string()));
        push("--ssl-ca-location", self.ssl_ca_location.as_ref().map(|p| p.display().to_string()));
        push("--ssl-certificate-location", self.ssl_certificate_location.as_ref().map(|p| p.display().to_string()));
        push("--ssl-key-location", self.ssl_key_location.as_ref().map(|p| p.display().to_string()));
        push("--sasl-mechanism", self.sasl_mechanism.map(|m| m.to_string()));
        push("--sasl-username", self.sasl_username.clone());
        push("--sasl-password-file", self.sasl_password_file.as_ref().map(|p| p.display().to_string()));
        args
    }
}

/// A security setting that cannot work; reported in one line at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{flag} needs --security-protocol SSL or SASL_SSL (it is {protocol})")]
    NeedsTls { flag: &'static str, protocol: SecurityProtocol },
    #[error("{flag} needs --security-protocol SASL_PLAINTEXT or SASL_SSL (it is {protocol})")]
    NeedsSasl { flag: &'static str, protocol: SecurityProtocol },
    #[error("--security-protocol {0} needs --sasl-username (or KAFKA_SASL_USERNAME)")]
    NoUsername(SecurityProtocol),
    #[error("--security-protocol {0} needs a password: set KAFKA_SASL_PASSWORD or --sasl-password-file")]
    NoPassword(SecurityProtocol),
    #[error("the SASL password is given twice: set KAFKA_SASL_PASSWORD or --sasl-password-file, not both")]
    TwoPasswords,
    #[error("--sasl-password-file {0}: the file is empty")]
    EmptyPassword(PathBuf),
    #[error("{0} is given without {1}: mutual TLS needs both")]
    HalfAPair(&'static str, &'static str),
    #[error("{flag} {path}: {reason}")]
    File { flag: &'static str, path: PathBuf, reason: String },
    #[error("no trusted root certificates found on this system; give --ssl-ca-location")]
    NoSystemRoots,
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
}

/// Validated security settings: what the client builder gets.
#[derive(Clone, Default)]
pub struct Security {
    pub protocol: Option<SecurityProtocol>,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<(SaslMechanism, String, String)>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Security {
    /// What a start-up line says of the settings: never the password.
    pub fn describe(&self) -> String {
        let protocol = self.protocol.unwrap_or(SecurityProtocol::Plaintext);
        match &self.sasl {
            Some((mechanism, user, _)) => format!("{protocol} ({mechanism} as {user})"),
            None => protocol.to_string(),
        }
    }

    /// Applies the settings to a client builder.
    pub fn apply(&self, mut builder: ClientBuilder) -> ClientBuilder {
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(tls));
        }
        if let Some((mechanism, user, password)) = &self.sasl {
            let credentials = Credentials::new(user.clone(), password.clone());
            builder = builder.sasl_config(match mechanism {
                SaslMechanism::Plain => SaslConfig::Plain(credentials),
                SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
                SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
            });
        }
        builder
    }
}

impl SecurityArgs {
    /// Checks the settings, reads the files they name and the password from
    /// [`PASSWORD_ENV`], and builds the TLS configuration.
    pub fn into_security(self) -> Result<Security, SecurityError> {
        self.into_security_with(std::env::var(PASSWORD_ENV).ok())
    }

    /// [`SecurityArgs::into_security`] with the password variable's value given.
    pub fn into_security_with(self, password_env: Option<String>) -> Result<Security, SecurityError> {
        let protocol = self.security_protocol.unwrap_or(SecurityProtocol::Plaintext);
        let needs_tls = |flag, given: bool| match given && !protocol.tls() {
            true => Err(SecurityError::NeedsTls { flag, protocol }),
            false => Ok(()),
        };
        needs_tls("--ssl-ca-location", self.ssl_ca_location.is_some())?;
        needs_tls("--ssl-certificate-location", self.ssl_certificate_location.is_some())?;
        needs_tls("--ssl-key-location", self.ssl_key_location.is_some())?;
        let needs_sasl = |flag, given: bool| match given && !protocol.sasl() {
            true => Err(SecurityError::NeedsSasl { flag, protocol }),
            false => Ok(()),
        };
        needs_sasl("--sasl-mechanism", self.sasl_mechanism.is_some())?;
        needs_sasl("--sasl-username", self.sasl_username.is_some())?;
        needs_sasl("--sasl-password-file", self.sasl_password_file.is_some())?;

        let sasl = if protocol.sasl() {
            let user = self.sasl_username.filter(|u| !u.is_empty()).ok_or(SecurityError::NoUsername(protocol))?;
            let password = match (password_env.filter(|p| !p.is_empty()), &self.sasl_password_file) {
                (Some(_), Some(_)) => return Err(SecurityError::TwoPasswords),
                (Some(p), None) => p,
                (None, Some(path)) => read_password(path)?,
                (None, None) => return Err(SecurityError::NoPassword(protocol)),
            };
            Some((self.sasl_mechanism.unwrap_or(SaslMechanism::Plain), user, password))
        } else {
            None
        };

        let tls = if protocol.tls() {
            let mut roots = rustls::RootCertStore::empty();
            match &self.ssl_ca_location {
                Some(path) => {
                    for cert in certificates("--ssl-ca-location", path)? {
                        roots.add(cert).map_err(|e| file_error("--ssl-ca-location", path, e))?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(found.certs);
                    if roots.is_empty() {
                        return Err(SecurityError::NoSystemRoots);
                    }
                }
            }
            // The ring provider is the one rskafka's rustls is built with; naming it keeps the
            // choice out of process-wide state.
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
            let config = match (&self.ssl_certificate_location, &self.ssl_key_location) {
                (Some(cert), Some(key)) => {
                    let chain = certificates("--ssl-certificate-location", cert)?;
                    let key = private_key(key)?;
                    builder.with_client_auth_cert(chain, key)?
                }
                (Some(_), None) => return Err(SecurityError::HalfAPair("--ssl-certificate-location", "--ssl-key-location")),
                (None, Some(_)) => return Err(SecurityError::HalfAPair("--ssl-key-location", "--ssl-certificate-location")),
                (None, None) => builder.with_no_client_auth(),
            };
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Security { protocol: self.security_protocol, tls, sasl })
    }
}

fn file_error(flag: &'static str, path: &Path, reason: impl fmt::Display) -> SecurityError {
    SecurityError::File { flag, path: path.to_owned(), reason: reason.to_string() }
}

fn read_password(path: &Path) -> Result<String, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error("--sasl-password-file", path, e))?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err(SecurityError::EmptyPassword(path.to_owned()));
    }
    Ok(password)
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(flag, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, e))?;
    if certs.is_empty() {
        return Err(file_error(flag, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    const FLAG: &str = "--ssl-key-location";
    let text = std::fs::read(path).map_err(|e| file_error(FLAG, path, e))?;
    if text.windows(9).any(|w| w == b"ENCRYPTED") {
        return Err(file_error(FLAG, path, "the key is encrypted; give it unencrypted (PKCS#8, PKCS#1 or SEC1 PEM)"));
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| file_error(FLAG, path, format!("no private key: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        security: SecurityArgs,
    }

    fn parse(args: &[&str], password: Option<&str>) -> Result<Security, String> {
        let cli = Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        cli.security.into_security_with(password.map(str::to_owned)).map_err(|e| e.to_string())
    }

    #[test]
    fn plaintext_by_default_and_names_are_the_java_clients() {
        assert_eq!(parse(&[], None).unwrap().describe(), "PLAINTEXT");
        let s = parse(&["--security-protocol", "sasl_plaintext", "--sasl-mechanism", "scram-sha-512", "--sasl-username", "svc"], Some("pw")).unwrap();
        assert_eq!(s.describe(), "SASL_PLAINTEXT (SCRAM-SHA-512 as svc)");
        assert!(!format!("{s:?}").contains("pw"), "the password is never printed");
    }

    #[test]
    fn settings_that_cannot_work_are_refused_in_one_line() {
        let e = parse(&["--sasl-username", "u"], None).unwrap_err();
        assert!(e.contains("--sasl-username needs --security-protocol SASL_PLAINTEXT or SASL_SSL"), "{e}");
        let e = parse(&["--ssl-ca-location", "/x"], None).unwrap_err();
        assert!(e.contains("needs --security-protocol SSL or SASL_SSL"), "{e}");
        let e = parse(&["--security-protocol", "SASL_PLAINTEXT", "--sasl-username", "u"], None).unwrap_err();
        assert!(e.contains("needs a password"), "{e}");
        let e = parse(&["--security-protocol", "SASL_PLAINTEXT"], Some("pw")).unwrap_err();
        assert!(e.contains("needs --sasl-username"), "{e}");
        let e = parse(&["--security-protocol", "SSL", "--ssl-ca-location", "/nonexistent/ca.pem"], None).unwrap_err();
        assert!(e.starts_with("--ssl-ca-location /nonexistent/ca.pem: "), "{e}");
        let e = parse(&["--security-protocol", "SSL", "--ssl-key-location", "/k"], None).unwrap_err();
        assert!(e.contains("mutual TLS needs both"), "{e}");
        assert!(parse(&["--security-protocol", "TLS"], None).is_err());
    }

    #[test]
    fn the_password_comes_from_a_file_or_the_environment_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let args = ["--security-protocol", "SASL_PLAINTEXT", "--sasl-username", "u", "--sasl-password-file", file.to_str().unwrap()];
        let s = parse(&args, None).unwrap();
        assert_eq!(s.sasl.as_ref().map(|(_, _, p)| p.as_str()), Some("s3cret"));
        assert!(parse(&args, Some("other")).unwrap_err().contains("not both"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let e = parse(&["--security-protocol", "SSL", "--ssl-ca-location", file.to_str().unwrap()], None).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
