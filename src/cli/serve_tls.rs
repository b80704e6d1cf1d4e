//! The TLS flags of `sagad serve`, flattened into `ServeArgs`: like every
//! other flag they carry no default and read no environment themselves
//! (`sagad::config` layers them over the file and `SAGAD_*`).

use std::path::PathBuf;

use sagad::config::TlsSettings;

/// TLS on the listeners and towards participants.
#[derive(clap::Args, Debug)]
pub struct ServeTlsArgs {
    /// Serve gRPC over TLS with this certificate chain (PEM, leaf first);
    /// re-read on SIGHUP and when it changes. [env: SAGAD_TLS_CERT] [default: plaintext]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM). [env: SAGAD_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates issued by these CAs (PEM bundle) on every
    /// listener (mTLS): other clients are refused at the handshake.
    /// [env: SAGAD_TLS_CLIENT_CA] [default: none]
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Serve /metrics over TLS with this certificate instead of --tls-cert's.
    /// [env: SAGAD_METRICS_TLS_CERT] [default: --tls-cert]
    #[arg(long, value_name = "FILE")]
    pub metrics_tls_cert: Option<PathBuf>,
    /// The private key of --metrics-tls-cert. [env: SAGAD_METRICS_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    pub metrics_tls_key: Option<PathBuf>,
    /// Verify https:// participants (and an https:// webhook) against these CAs
    /// (PEM bundle). [env: SAGAD_PARTICIPANT_CA] [default: the system's roots]
    #[arg(long, value_name = "FILE")]
    pub participant_ca: Option<PathBuf>,
    /// Present this client certificate to https:// participants that ask.
    /// [env: SAGAD_PARTICIPANT_CERT] [default: none]
    #[arg(long, value_name = "FILE")]
    pub participant_cert: Option<PathBuf>,
    /// The private key of --participant-cert. [env: SAGAD_PARTICIPANT_KEY]
    #[arg(long, value_name = "FILE")]
    pub participant_key: Option<PathBuf>,
}

impl ServeTlsArgs {
    /// The flags as the top configuration layer.
    pub fn settings(&self) -> TlsSettings {
        TlsSettings {
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            metrics_tls_cert: self.metrics_tls_cert.clone(),
            metrics_tls_key: self.metrics_tls_key.clone(),
            participant_ca: self.participant_ca.clone(),
            participant_cert: self.participant_cert.clone(),
            participant_key: self.participant_key.clone(),
            participant_tls: None,
        }
    }
}
