//! `--geoip-db PATH`: where source addresses are, from MaxMind-format (`.mmdb`) databases such
//! as DB-IP's free IP-to-Country Lite and IP-to-ASN Lite or GeoLite2 Country and ASN. A
//! database whose type names ASN gives autonomous systems; any other (Country, City) gives
//! countries. Each file is read into memory once at startup; a lookup is a walk of its tree.
//! Used by the analytics buckets (`store::analytics::Locate`); without a database every
//! source is of an unknown country.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::settings::ConfigError;
use crate::store::analytics::{Locate, MAX_VALUE_CHARS};

/// The option, as errors name it.
const OPTION: &str = "--geoip-db";
/// The largest database read: DB-IP's and GeoLite2's country and ASN files are under 100 MB
/// (a city database is larger and not needed for countries).
const MAX_DB_BYTES: u64 = 256 * 1024 * 1024;

/// The databases given, by what they provide.
pub struct GeoIp {
    country: Option<maxminddb::Reader<Vec<u8>>>,
    asn: Option<maxminddb::Reader<Vec<u8>>>,
    paths: Vec<PathBuf>,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp").field("paths", &self.paths).finish()
    }
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
}

impl GeoIp {
    /// Opens every database given; a file that cannot be read or is not a country, city or
    /// ASN database is a bad setting, as are two of the same kind.
    pub fn open(paths: &[PathBuf]) -> Result<GeoIp, ConfigError> {
        let mut geo = GeoIp {
            country: None,
            asn: None,
            paths: paths.to_vec(),
        };
        for path in paths {
            let reader = read(path)?;
            let kind = reader.metadata().database_type.clone();
            let slot = if kind.to_ascii_uppercase().contains("ASN") {
                &mut geo.asn
            } else if kind.contains("Country") || kind.contains("City") {
                &mut geo.country
            } else {
                return Err(ConfigError::new(
                    OPTION,
                    path.display(),
                    format!("a {kind:?} database holds neither countries nor autonomous systems"),
                ));
            };
            if slot.is_some() {
                return Err(ConfigError::new(
                    OPTION,
                    path.display(),
                    format!("a second {kind:?} database: give one country and one ASN database"),
                ));
            }
            *slot = Some(reader);
        }
        Ok(geo)
    }

    pub fn has_countries(&self) -> bool {
        self.country.is_some()
    }

    pub fn has_asns(&self) -> bool {
        self.asn.is_some()
    }
}

fn read(path: &Path) -> Result<maxminddb::Reader<Vec<u8>>, ConfigError> {
    let bad = |why: String| ConfigError::new(OPTION, path.display(), why);
    let len = std::fs::metadata(path)
        .map_err(|e| bad(format!("cannot read it: {e}")))?
        .len();
    if len > MAX_DB_BYTES {
        return Err(bad(format!(
            "{len} bytes is larger than a country or ASN database"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    maxminddb::Reader::from_source(bytes)
        .map_err(|e| bad(format!("not a MaxMind-format database: {e}")))
}

impl Locate for GeoIp {
    fn country(&self, ip: IpAddr) -> Option<String> {
        let db = self.country.as_ref()?;
        let found = db.lookup(ip.to_canonical()).ok()?;
        let r: CountryRecord<'_> = found.decode().ok()??;
        let code = r
            .country
            .and_then(|c| c.iso_code)
            .or_else(|| r.registered_country.and_then(|c| c.iso_code))?;
        // An ISO 3166 code: two letters. Anything else in a database is not shown.
        (code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
            .then(|| code.to_ascii_uppercase())
    }

    fn asn(&self, ip: IpAddr) -> Option<String> {
        let db = self.asn.as_ref()?;
        let found = db.lookup(ip.to_canonical()).ok()?;
        let r: AsnRecord<'_> = found.decode().ok()??;
        let number = r.autonomous_system_number?;
        let name: String = r
            .autonomous_system_organization
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_VALUE_CHARS)
            .collect();
        Some(if name.is_empty() {
            format!("AS{number}")
        } else {
            format!("AS{number} {name}")
        })
    }
}
