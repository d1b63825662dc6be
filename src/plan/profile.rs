//! Hardware profiles: TOML files giving the device, host and storage tiers and the
//! host-to-device link (capacity, price, bandwidth, latency, IOPS), and optionally the
//! engine's CPU cost per row read from the store, checked and merged from one or more
//! files into the one machine the planner prices.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{parse_toml, read, ConfigError};

/// One memory or storage tier of a machine (`[device]`, `[host]` or `[storage]`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierProfile {
    /// What the tier is, e.g. "NVIDIA H100 SXM5 HBM3".
    pub name: String,
    /// The most of this tier one machine can hold, GB (1e9 bytes); > 0.
    pub capacity_gb: f64,
    /// USD per GB of capacity; >= 0.
    pub price_per_gb: f64,
    /// Sustained read bandwidth, GB/s; > 0.
    pub bandwidth_gbps: f64,
    /// One random row read at queue depth 1, microseconds; > 0.
    pub latency_us: f64,
    /// Random row reads per second at full parallelism (for memory tiers: the random
    /// row gather rate); > 0.
    pub iops: f64,
    /// Sustained write bandwidth, GB/s; `bandwidth_gbps` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bandwidth_gbps: Option<f64>,
    /// Random row writes per second; `iops` when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_iops: Option<f64>,
}

impl TierProfile {
    /// Sustained write bandwidth, GB/s (the read bandwidth when the profile gives none).
    pub fn write_bandwidth_gbps(&self) -> f64 {
        self.write_bandwidth_gbps.unwrap_or(self.bandwidth_gbps)
    }

    /// Random row writes per second (the read IOPS when the profile gives none).
    pub fn write_iops(&self) -> f64 {
        self.write_iops.unwrap_or(self.iops)
    }

    /// The first figure out of range, as `(field, requirement, value)`.
    fn out_of_range(&self) -> Option<(&'static str, &'static str, f64)> {
        let positive = [
            ("capacity_gb", Some(self.capacity_gb)),
            ("bandwidth_gbps", Some(self.bandwidth_gbps)),
            ("latency_us", Some(self.latency_us)),
            ("iops", Some(self.iops)),
            ("write_bandwidth_gbps", self.write_bandwidth_gbps),
            ("write_iops", self.write_iops),
        ];
        if !(self.price_per_gb >= 0.0 && self.price_per_gb.is_finite()) {
            return Some(("price_per_gb", ">= 0", self.price_per_gb));
        }
        positive.into_iter().find_map(|(field, value)| value.filter(|v| !(*v > 0.0 && v.is_finite())).map(|v| (field, "> 0", v)))
    }
}

/// The host-to-device transfer (`[link]`), e.g. PCIe Gen5 x16.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    pub name: String,
    /// Sustained host-to-device copy bandwidth, GB/s; > 0.
    pub bandwidth_gbps: f64,
    /// One small transfer, microseconds; > 0.
    pub latency_us: f64,
}

/// The engine's own CPU work on this machine (`[engine]`), measured by `strata
/// calibrate`: what the consumer spends on each row read from the store beyond what a
/// hit costs (staging the row, the policies' inserts and evictions, slab writes), and
/// the rate the store keeps up while the consumer works beside it (read-ahead), when
/// the storage thread shares the cores with the consumer and the batch source.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineProfile {
    /// What was measured, e.g. "engine on AMD EPYC, 2 cores".
    pub name: String,
    /// CPU nanoseconds per row read from the store, beyond a hit's; >= 0.
    pub store_row_ns: f64,
    /// Rows per second the store delivers under read-ahead, the consumer working beside
    /// the storage thread; > 0. None: the store's own `iops` then too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_store_iops: Option<f64>,
}

/// One profile file as written: its name, where its figures come from, and the parts of
/// the machine it gives (any of the three tiers, the link and the engine's CPU cost).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub name: String,
    /// Where the figures come from (datasheets, a calibration run).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<TierProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<TierProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<TierProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkProfile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineProfile>,
}

impl ProfileFile {
    /// Reads and checks the profile file at `path`.
    pub fn load(path: &Path) -> Result<ProfileFile, ConfigError> {
        Self::parse(path, &read(path)?)
    }

    /// Parses and checks the text of a profile file read from `path`: every figure must
    /// be a finite number in range (an error names the table, the field and its line).
    pub fn parse(path: &Path, text: &str) -> Result<ProfileFile, ConfigError> {
        let file: ProfileFile = parse_toml(path, text)?;
        let error = |table: &str, field: &str, message: String| {
            let line = line_of(text, table, Some(field)).map(|line| format!("line {line}: ")).unwrap_or_default();
            ConfigError::new(path, format!("{line}[{table}] {message}"))
        };
        if file.device.is_none() && file.host.is_none() && file.storage.is_none() && file.link.is_none() && file.engine.is_none() {
            return Err(ConfigError::new(path, "gives none of [device], [host], [storage], [link] and [engine]"));
        }
        for (table, tier) in file.tiers() {
            let Some(tier) = tier else { continue };
            if tier.name.trim().is_empty() {
                return Err(error(table, "name", "name must not be empty".into()));
            }
            if let Some((field, requirement, value)) = tier.out_of_range() {
                return Err(error(table, field, format!("{field} must be {requirement}, got {value}")));
            }
        }
        if let Some(link) = &file.link {
            if link.name.trim().is_empty() {
                return Err(error("link", "name", "name must not be empty".into()));
            }
            for (field, value) in [("bandwidth_gbps", link.bandwidth_gbps), ("latency_us", link.latency_us)] {
                if !(value > 0.0 && value.is_finite()) {
                    return Err(error("link", field, format!("{field} must be > 0, got {value}")));
                }
            }
        }
        if let Some(engine) = &file.engine {
            if engine.name.trim().is_empty() {
                return Err(error("engine", "name", "name must not be empty".into()));
            }
            if !(engine.store_row_ns >= 0.0 && engine.store_row_ns.is_finite()) {
                return Err(error("engine", "store_row_ns", format!("store_row_ns must be >= 0, got {}", engine.store_row_ns)));
            }
            if let Some(iops) = engine.shared_store_iops.filter(|iops| !(*iops > 0.0 && iops.is_finite())) {
                return Err(error("engine", "shared_store_iops", format!("shared_store_iops must be > 0, got {iops}")));
            }
        }
        Ok(file)
    }

    /// The file as TOML text, as `load` reads it back.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a profile is plain strings and numbers")
    }

    fn tiers(&self) -> [(&'static str, Option<&TierProfile>); 3] {
        [("device", self.device.as_ref()), ("host", self.host.as_ref()), ("storage", self.storage.as_ref())]
    }
}

/// A whole machine: the three tiers and the link, merged from profile files.
#[derive(Clone, Debug, PartialEq)]
pub struct HardwareProfile {
    /// The files' names, joined by " + ".
    pub name: String,
    pub device: TierProfile,
    pub host: TierProfile,
    pub storage: TierProfile,
    pub link: LinkProfile,
    /// The engine's CPU cost, where a file gives it (none: the model counts no CPU time
    /// per store row).
    pub engine: Option<EngineProfile>,
    /// The files it was merged from.
    pub sources: Vec<PathBuf>,
}

impl HardwareProfile {
    /// Reads the profile files at `paths` and merges them: each of `[device]`, `[host]`,
    /// `[storage]` and `[link]` must be given by exactly one file.
    pub fn load(paths: &[PathBuf]) -> Result<HardwareProfile, ConfigError> {
        if paths.is_empty() {
            return Err(ConfigError::new(Path::new("hardware profile"), "no profile file given"));
        }
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let text = read(path)?;
            let file = ProfileFile::parse(path, &text)?;
            files.push(Loaded { path, text, file });
        }
        Ok(HardwareProfile {
            name: files.iter().map(|loaded| loaded.file.name.as_str()).collect::<Vec<_>>().join(" + "),
            device: the_one(&files, "device", "tier", |file| file.device.as_ref())?,
            host: the_one(&files, "host", "tier", |file| file.host.as_ref())?,
            storage: the_one(&files, "storage", "tier", |file| file.storage.as_ref())?,
            link: the_one(&files, "link", "(host-to-device transfer)", |file| file.link.as_ref())?,
            engine: at_most_one(&files, "engine", |file| file.engine.as_ref())?,
            sources: paths.to_vec(),
        })
    }

    /// CPU seconds the engine spends per row read from the store (0 when no file gives
    /// `[engine]`).
    pub fn store_row_seconds(&self) -> f64 {
        self.engine.as_ref().map_or(0.0, |engine| engine.store_row_ns * 1e-9)
    }

    /// The store's random-read rate while the consumer works beside it (read-ahead):
    /// the `[engine]` part's `shared_store_iops`, else the store's own `iops`.
    pub fn shared_store_iops(&self) -> f64 {
        self.engine.as_ref().and_then(|engine| engine.shared_store_iops).unwrap_or(self.storage.iops)
    }
}

/// A profile file read for merging.
struct Loaded<'a> {
    path: &'a Path,
    text: String,
    file: ProfileFile,
}

/// The part `table` given by exactly one of `files`; an error names the two files that
/// both give it, or every file when none does.
fn the_one<T: Clone>(files: &[Loaded], table: &str, what: &str, part: impl Fn(&ProfileFile) -> Option<&T>) -> Result<T, ConfigError> {
    at_most_one(files, table, part)?.ok_or_else(|| {
        let names = files.iter().map(|loaded| loaded.path.display().to_string()).collect::<Vec<_>>().join(", ");
        ConfigError::new(Path::new(&names), format!("no profile gives the [{table}] {what}"))
    })
}

/// The part `table` where one of `files` gives it; an error names the two files that
/// both give it.
fn at_most_one<T: Clone>(files: &[Loaded], table: &str, part: impl Fn(&ProfileFile) -> Option<&T>) -> Result<Option<T>, ConfigError> {
    let mut found: Option<(&Path, &T)> = None;
    for loaded in files {
        let Some(given) = part(&loaded.file) else { continue };
        if let Some((first, _)) = found {
            let line = line_of(&loaded.text, table, None).map(|line| format!("line {line}: ")).unwrap_or_default();
            return Err(ConfigError::new(
                loaded.path,
                format!("{line}[{table}] is given here and by {} too; give each part in one file only", first.display()),
            ));
        }
        found = Some((loaded.path, given));
    }
    Ok(found.map(|(_, given)| given.clone()))
}

/// The 1-based line of `[table]`'s header (`field` `None`) or of `field = ...` inside it,
/// when written as a plain table.
fn line_of(text: &str, table: &str, field: Option<&str>) -> Option<usize> {
    let mut current = None;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header.split(']').next().map(str::trim);
            if field.is_none() && current == Some(table) {
                return Some(index + 1);
            }
        } else if let (Some(field), Some((key, _))) = (field, line.split_once('=')) {
            if current == Some(table) && key.trim() == field {
                return Some(index + 1);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "name = \"h\"\nsource = \"s\"\n\n[host]\nname = \"DDR\"\ncapacity_gb = 64\nprice_per_gb = 3.5\nbandwidth_gbps = 20\nlatency_us = 0.1\niops = 1e7\n";

    #[test]
    fn write_figures_default_to_the_read_figures() {
        let file = ProfileFile::parse(Path::new("h.toml"), HOST).unwrap();
        let host = file.host.unwrap();
        assert_eq!((host.capacity_gb, host.write_bandwidth_gbps(), host.write_iops()), (64.0, 20.0, 1e7));
        let written = HOST.replace("iops = 1e7", "iops = 1e7\nwrite_iops = 5e6\nwrite_bandwidth_gbps = 9");
        let host = ProfileFile::parse(Path::new("h.toml"), &written).unwrap().host.unwrap();
        assert_eq!((host.write_bandwidth_gbps(), host.write_iops()), (9.0, 5e6));
    }

    #[test]
    fn a_figure_out_of_range_names_its_line() {
        let bad = HOST.replace("latency_us = 0.1", "latency_us = nan");
        let error = ProfileFile::parse(Path::new("h.toml"), &bad).unwrap_err().to_string();
        assert_eq!(error, "h.toml: line 9: [host] latency_us must be > 0, got NaN");
        let bad = HOST.replace("price_per_gb = 3.5", "price_per_gb = -1");
        let error = ProfileFile::parse(Path::new("h.toml"), &bad).unwrap_err().to_string();
        assert_eq!(error, "h.toml: line 7: [host] price_per_gb must be >= 0, got -1");
    }

    #[test]
    fn a_written_profile_reads_back_the_same() {
        let file = ProfileFile::parse(Path::new("h.toml"), HOST).unwrap();
        assert_eq!(ProfileFile::parse(Path::new("again.toml"), &file.to_toml()).unwrap(), file);
    }
}
