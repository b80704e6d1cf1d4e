//! Certificates the TLS tests make for themselves (rcgen): certificate
//! authorities, and leaves they sign for `127.0.0.1` and `localhost`, written
//! as PEM files into a temporary directory. Expired ones are dated in 2000, so
//! no test depends on today's date beyond "after 2001".

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use sagad::tls::{KeyPairFiles, ListenerTls, PemFile};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM: what a client or server trusts.
    pub pem: String,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate's DER bytes, to compare with what a peer presented.
    pub der: Vec<u8>,
}

/// Whether a leaf is valid now.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Current,
    /// Valid only during the year 2000.
    Expired,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf for `127.0.0.1` and `localhost`, usable by a server and a client.
    pub fn leaf(&self, name: &str, validity: Validity) -> Leaf {
        self.leaf_for(name, &["127.0.0.1", "localhost"], validity)
    }

    /// A leaf for the names (or addresses) `sans`, usable by a server and a
    /// client.
    pub fn leaf_for(&self, name: &str, sans: &[&str], validity: Validity) -> Leaf {
        let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if validity == Validity::Expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    pub fn current(&self, name: &str) -> Leaf {
        self.leaf(name, Validity::Current)
    }
}

/// A temporary directory of PEM files.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `name` (replacing it whole: written aside, then
    /// renamed, as a certificate manager does), and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let aside = self.dir.path().join(format!(".{name}.new"));
        std::fs::write(&aside, text).unwrap();
        std::fs::rename(&aside, &path).unwrap();
        path
    }

    /// Writes `leaf` as `NAME.pem` and `NAME.key`.
    pub fn leaf(&self, name: &str, leaf: &Leaf) -> KeyPairFiles {
        KeyPairFiles {
            cert: PemFile::new(self.write(&format!("{name}.pem"), &leaf.cert_pem), "cert"),
            key: PemFile::new(self.write(&format!("{name}.key"), &leaf.key_pem), "key"),
        }
    }

    /// Writes `ca`'s certificate as `NAME.pem`.
    pub fn ca(&self, name: &str, ca: &Ca) -> PemFile {
        PemFile::new(self.write(&format!("{name}.pem"), &ca.pem), "ca")
    }

    /// A listener's TLS: `leaf` as its identity, `client_ca` for mTLS.
    pub fn listener(&self, leaf: &Leaf, client_ca: Option<&Ca>) -> ListenerTls {
        ListenerTls {
            identity: self.leaf("server", leaf),
            client_ca: client_ca.map(|ca| self.ca("client-ca", ca)),
        }
    }
}
