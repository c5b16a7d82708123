//! The policy file as serde reads it: every key optional, every value
//! spanned and kept even when of the wrong type (see `spanned`), so that
//! the checks name every problem with its line. The field names are the
//! file's keys (`known_keys` reads them from here).

use serde::Deserialize;

use super::spanned::{Field, Many, Sec, Section, Val};
use super::{crowdsec_table, fleet};

/// The file as serde reads it: every key optional, every value spanned.
#[derive(Deserialize)]
pub(super) struct File {
    pub(super) allow: Many<Val<String>>,
    pub(super) block: Many<Val<String>>,
    pub(super) defaults: Sec<DefaultsFile>,
    pub(super) limit: Many<Section<LimitFile>>,
    pub(super) rule: Many<Section<RuleFile>>,
    pub(super) flood: Sec<FloodFile>,
    pub(super) autoban: Sec<AutobanFile>,
    pub(super) table: Sec<TableFile>,
    pub(super) crowdsec: Sec<crowdsec_table::File>,
    pub(super) fleet: Sec<fleet::File>,
}

#[derive(Deserialize)]
pub(super) struct DefaultsFile {
    pub(super) rate: Field<i64>,
    pub(super) burst: Field<i64>,
    pub(super) ipv4_prefix: Field<i64>,
    pub(super) ipv6_prefix: Field<i64>,
    pub(super) mode: Field<String>,
}

#[derive(Deserialize)]
pub(super) struct LimitFile {
    pub(super) cidr: Field<String>,
    pub(super) rate: Field<i64>,
    pub(super) burst: Field<i64>,
}

#[derive(Deserialize)]
pub(super) struct RuleFile {
    pub(super) name: Field<String>,
    pub(super) protocol: Field<String>,
    pub(super) dst_port: Field<Port>,
    pub(super) syn_only: Field<bool>,
    pub(super) rate: Field<i64>,
    pub(super) burst: Field<i64>,
}

/// `dst_port`: `22` or `"1000-2000"`.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Port {
    One(i64),
    Range(String),
}

#[derive(Deserialize)]
pub(super) struct FloodFile {
    pub(super) new_sources_rate: Field<i64>,
    pub(super) new_sources_burst: Field<i64>,
    pub(super) syn_challenge: Field<bool>,
    pub(super) syn_challenge_rate: Field<i64>,
    pub(super) syn_challenge_burst: Field<i64>,
}

#[derive(Deserialize)]
pub(super) struct TableFile {
    pub(super) max_sources: Field<i64>,
    pub(super) max_list_entries: Field<i64>,
}

#[derive(Deserialize)]
pub(super) struct AutobanFile {
    pub(super) drops: Field<i64>,
    pub(super) window: Field<String>,
    pub(super) ban: Field<String>,
    pub(super) max_ban: Field<String>,
}
