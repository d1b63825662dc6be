//! The remote tier: [`RedisStore`], a [`BackingStore`] whose rows live in a Redis
//! Cluster, one key per row with a hash tag that puts `block_rows` consecutive rows in
//! one slot, each value the row's bytes (values and optimizer state) and a CRC32 that
//! is checked on every read; read with one MGET and written with one MSET per slot,
//! pipelined per node, through the cluster client of `cluster`. A row never written
//! reads as its initial value, so a table of any size is created at once. See
//! docs/SCALE-OUT.md.

mod cluster;
mod local;
mod publish;

use std::time::Duration;

use redis::Value;
use serde::{Deserialize, Serialize};

use self::cluster::{Cluster, ExecuteError};
use super::BackingStore;
use crate::engine::{EngineError, InitRows, RowInit, RowLayout};

pub use self::cluster::{key_slot, SLOTS};
pub use self::local::LocalCluster;
pub use self::publish::{Changed, Follower, Publisher, Staleness, Update};

/// Keys one MGET or MSET carries at most (a slot's keys beyond that go in more commands).
const KEYS_PER_COMMAND: usize = 512;
/// Keys one UNLINK carries when a table is created over an earlier one.
const UNLINK_KEYS: usize = 1000;

/// `[engine.remote]`: where the table lives in a Redis Cluster. Every field is documented
/// in configs/README.md.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Cluster nodes to start from, `host:port` each (any node of the cluster will do;
    /// the others are found through it).
    pub nodes: Vec<String>,
    /// The table's name: the keys are `strata:{<table>:<block>}:<row>`.
    pub table: String,
    /// Consecutive rows that share one hash tag, and so one slot and one node.
    #[serde(default = "default_block_rows")]
    pub block_rows: u64,
    /// Bound on each connect and each reply, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a failing read or write is tried again (a lost node, a failover, a
    /// resharding) before the run stops with an error, in seconds.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: f64,
    /// Replicas each write must reach (Redis `WAIT`) before it counts as done; 1 keeps
    /// every acknowledged row through the failover of its master. 0 = the master alone.
    #[serde(default)]
    pub replicas: u32,
}

fn default_block_rows() -> u64 {
    64
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_retry_seconds() -> f64 {
    30.0
}

impl RemoteConfig {
    /// A config with the defaults for everything but the nodes and the table.
    pub fn new(nodes: Vec<String>, table: &str) -> RemoteConfig {
        RemoteConfig {
            nodes,
            table: table.to_string(),
            block_rows: default_block_rows(),
            timeout_ms: default_timeout_ms(),
            retry_seconds: default_retry_seconds(),
            replicas: 0,
        }
    }

    /// Checks every field; the message names the field and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("nodes: give at least one `host:port`".into());
        }
        for node in &self.nodes {
            let port = node.rsplit_once(':').filter(|(host, _)| !host.is_empty()).map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(p)) if p > 0) {
                return Err(format!("nodes: `{node}` is not `host:port` (a port from 1 to 65535)"));
            }
        }
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if self.table.is_empty() || !self.table.chars().all(name_ok) {
            return Err(format!("table: `{}` must be letters, digits, `_`, `-` or `.` (it goes into every key)", self.table));
        }
        if self.block_rows == 0 {
            return Err("block_rows must be at least 1".into());
        }
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1".into());
        }
        if !(self.retry_seconds.is_finite() && self.retry_seconds >= 0.0) {
            return Err(format!("retry_seconds must be 0 or more, not {}", self.retry_seconds));
        }
        Ok(())
    }
}

/// A failure of the remote tier; every message names the table, and where a key was
/// involved the key, its slot and the node.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("engine.remote: {0}")]
    BadConfig(String),
    #[error("redis table `{table}`: no node of {nodes} answered CLUSTER SLOTS: {message}")]
    Unreachable { table: String, nodes: String, message: String },
    #[error(
        "redis table `{table}`: {action} key {key} (slot {slot}, node {node}): {reason}; gave up after {attempts} tries in {seconds:.1} s"
    )]
    GaveUp { table: String, action: &'static str, key: String, slot: u16, node: String, reason: String, attempts: u32, seconds: f64 },
    #[error("redis table `{table}`: {action} key {key} (slot {slot}, node {node}): refused: {reason}")]
    Refused { table: String, action: &'static str, key: String, slot: u16, node: String, reason: String },
    #[error("redis table `{table}`: key {key} (slot {slot}, node {node}): {message}")]
    Corrupt { table: String, key: String, slot: u16, node: String, message: String },
    #[error("redis table `{table}`: {message}")]
    Table { table: String, message: String },
    #[error("redis table `{table}`: row {row} (entry {index} of the request) is out of range: the table has {rows} rows")]
    RowOutOfRange { table: String, row: u64, index: usize, rows: u64 },
    #[error("redis table `{table}`: {operation}: the buffer holds {actual} floats, {rows} rows need {expected}")]
    BufferSize { table: String, operation: &'static str, rows: usize, expected: usize, actual: usize },
}

impl From<RemoteError> for EngineError {
    fn from(error: RemoteError) -> Self {
        EngineError::Remote(Box::new(error))
    }
}

/// What the meta key `strata:{<table>:meta}` holds: the table's shape, checked on open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TableMeta {
    format: u32,
    rows: u64,
    layout: RowLayout,
    init: RowInit,
    block_rows: u64,
}

/// The value format version in the meta key.
const FORMAT: u32 = 1;

/// Counters of a remote store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RemoteStats {
    pub rows_read: u64,
    /// Rows read that were never written (their initial value, computed).
    pub rows_initial: u64,
    pub rows_written: u64,
    /// Commands (MGET / MSET) sent, and pipelines they went in (one per node a call
    /// reaches, more past `PIPELINE_COMMANDS`, and one per node on every retry).
    pub commands: u64,
    pub pipelines: u64,
    /// Tries that failed and were retried, and times the slot map was read again.
    pub retries: u64,
    pub refreshes: u64,
}

/// One table in a Redis Cluster: every row of it, addressable by global row index.
pub struct RedisStore {
    config: RemoteConfig,
    meta: TableMeta,
    cluster: Cluster,
    stats: RemoteStats,
}

impl RedisStore {
    /// Creates table `config.table` of `rows` rows initialised by `init`: removes the
    /// keys of an earlier table of that name, then writes the meta key. No row is
    /// written: each reads as its initial value until it is.
    pub fn create(config: &RemoteConfig, rows: u64, layout: RowLayout, init: RowInit) -> Result<RedisStore, RemoteError> {
        let mut store = RedisStore::connect(config)?;
        store.meta = TableMeta { format: FORMAT, rows, layout, init, block_rows: config.block_rows };
        store.remove_keys()?;
        let json = serde_json::to_vec(&store.meta).map_err(|e| store.table_error(format!("encoding the meta key: {e}")))?;
        let key = store.meta_key();
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(json);
        store.run(vec![(key_slot(key.as_bytes()), set)], vec![key], "writing")?;
        Ok(store)
    }

    /// Opens table `config.table`, as its meta key describes it.
    pub fn open(config: &RemoteConfig) -> Result<RedisStore, RemoteError> {
        let mut store = RedisStore::connect(config)?;
        let key = store.meta_key();
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let reply = store.run(vec![(key_slot(key.as_bytes()), get)], vec![key.clone()], "reading")?;
        let meta: TableMeta = match reply.into_iter().next() {
            Some(Value::BulkString(bytes)) => {
                serde_json::from_slice(&bytes).map_err(|e| store.table_error(format!("meta key {key}: {e}")))?
            }
            _ => return Err(store.table_error(format!("no such table (meta key {key} is missing): create it first"))),
        };
        if meta.format != FORMAT || meta.block_rows == 0 {
            return Err(store.table_error(format!(
                "meta key {key}: format {} with block_rows {} is not one this build reads",
                meta.format, meta.block_rows
            )));
        }
        store.meta = meta;
        Ok(store)
    }

    fn connect(config: &RemoteConfig) -> Result<RedisStore, RemoteError> {
        config.validate().map_err(RemoteError::BadConfig)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let retry = Duration::from_secs_f64(config.retry_seconds);
        let cluster = Cluster::connect(&config.nodes, timeout, retry).map_err(|message| RemoteError::Unreachable {
            table: config.table.clone(),
            nodes: config.nodes.join(", "),
            message,
        })?;
        let meta = TableMeta { format: FORMAT, rows: 0, layout: RowLayout::f32(0, 0), init: RowInit::Zeros, block_rows: config.block_rows };
        Ok(RedisStore { config: config.clone(), meta, cluster, stats: RemoteStats::default() })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    /// The masters serving the table's slots now.
    pub fn masters(&self) -> Vec<String> {
        self.cluster.masters()
    }

    pub fn stats(&self) -> RemoteStats {
        RemoteStats { retries: self.cluster.retries, refreshes: self.cluster.refreshes, pipelines: self.cluster.pipelines, ..self.stats }
    }

    /// The key of `row`: `strata:{<table>:<block>}:<row>`.
    pub fn key(&self, row: u64) -> String {
        format!("strata:{{{}:{}}}:{row}", self.config.table, row / self.meta.block_rows)
    }

    fn meta_key(&self) -> String {
        format!("strata:{{{}:meta}}", self.config.table)
    }

    fn table_error(&self, message: String) -> RemoteError {
        RemoteError::Table { table: self.config.table.clone(), message }
    }

    /// Runs `commands` on the cluster; `keys[i]` is the first key of command `i`, named
    /// in an error.
    fn run(&mut self, commands: Vec<(u16, redis::Cmd)>, keys: Vec<String>, action: &'static str) -> Result<Vec<Value>, RemoteError> {
        self.stats.commands += commands.len() as u64;
        let replicas = if action == "writing" { self.config.replicas } else { 0 };
        self.cluster.execute(&commands, replicas).map_err(|e| {
            let table = self.config.table.clone();
            match e {
                ExecuteError::GaveUp { index, failure, attempts, seconds } => RemoteError::GaveUp {
                    table,
                    action,
                    key: keys[index].clone(),
                    slot: failure.slot,
                    node: failure.node,
                    reason: failure.reason,
                    attempts,
                    seconds,
                },
                ExecuteError::Refused { index, failure } => RemoteError::Refused {
                    table,
                    action,
                    key: keys[index].clone(),
                    slot: failure.slot,
                    node: failure.node,
                    reason: failure.reason,
                },
            }
        })
    }

    /// Removes every key of the table (rows and meta) from every master: SCAN, UNLINK.
    fn remove_keys(&mut self) -> Result<(), RemoteError> {
        let pattern = format!("strata:{{{}:*", self.config.table);
        for master in self.cluster.masters() {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let reply = self.cluster.scan(&master, &scan).map_err(|message| RemoteError::Unreachable {
                    table: self.config.table.clone(),
                    nodes: master.clone(),
                    message,
                })?;
                let (next, keys) = parse_scan(reply).map_err(|m| self.table_error(format!("SCAN on {master}: {m}")))?;
                let mut commands = Vec::new();
                let mut names = Vec::new();
                for key in keys {
                    let slot = key_slot(key.as_bytes());
                    match commands.iter_mut().find(|(s, n, _): &&mut (u16, usize, redis::Cmd)| *s == slot && *n < UNLINK_KEYS) {
                        Some((_, n, cmd)) => {
                            cmd.arg(&key);
                            *n += 1;
                        }
                        None => {
                            let mut cmd = redis::cmd("UNLINK");
                            cmd.arg(&key);
                            names.push(key);
                            commands.push((slot, 1, cmd));
                        }
                    }
                }
                let commands = commands.into_iter().map(|(slot, _, cmd)| (slot, cmd)).collect();
                self.run(commands, names, "removing")?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(())
    }

    fn check_request(&self, operation: &'static str, rows: &[u64], buffer_floats: usize) -> Result<(), RemoteError> {
        let floats = self.meta.layout.words();
        if buffer_floats != rows.len() * floats {
            let (table, expected) = (self.config.table.clone(), rows.len() * floats);
            return Err(RemoteError::BufferSize { table, operation, rows: rows.len(), expected, actual: buffer_floats });
        }
        match rows.iter().position(|&row| row >= self.meta.rows) {
            Some(index) => {
                Err(RemoteError::RowOutOfRange { table: self.config.table.clone(), row: rows[index], index, rows: self.meta.rows })
            }
            None => Ok(()),
        }
    }

    /// `positions` (indexes into `keys`) grouped by slot, at most `KEYS_PER_COMMAND`
    /// per group, in the order of the request within each group.
    fn group_by_slot(keys: &[String], positions: impl Iterator<Item = usize>) -> Vec<(u16, Vec<usize>)> {
        let mut order: Vec<(u16, usize)> = positions.map(|i| (key_slot(keys[i].as_bytes()), i)).collect();
        order.sort_unstable();
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (slot, i) in order {
            match groups.last_mut() {
                Some((s, list)) if *s == slot && list.len() < KEYS_PER_COMMAND => list.push(i),
                _ => groups.push((slot, vec![i])),
            }
        }
        groups
    }

    /// Reads whole rows, `out[i * floats..]` from `rows[i]`: one MGET per slot, the MGETs
    /// of a node in one pipeline; a missing key is the row's initial value.
    pub fn read_rows(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), RemoteError> {
        self.check_request("read_rows", rows, out.len())?;
        let floats = self.meta.layout.words();
        let keys: Vec<String> = rows.iter().map(|&row| self.key(row)).collect();
        let groups = Self::group_by_slot(&keys, 0..rows.len());
        let mut commands = Vec::with_capacity(groups.len());
        let mut first_keys = Vec::with_capacity(groups.len());
        for (slot, list) in &groups {
            let mut mget = redis::cmd("MGET");
            for &i in list {
                mget.arg(&keys[i]);
            }
            commands.push((*slot, mget));
            first_keys.push(keys[list[0]].clone());
        }
        let replies = self.run(commands, first_keys, "reading")?;
        for ((slot, list), reply) in groups.iter().zip(replies) {
            let node = self.cluster.node_of(*slot).unwrap_or("?").to_string();
            let Value::Array(values) = reply else {
                return Err(self.corrupt(rows[list[0]], *slot, &node, format!("MGET replied {reply:?}")));
            };
            if values.len() != list.len() {
                return Err(self.corrupt(
                    rows[list[0]],
                    *slot,
                    &node,
                    format!("MGET of {} keys replied {} values", list.len(), values.len()),
                ));
            }
            for (&i, value) in list.iter().zip(values) {
                let row = &mut out[i * floats..(i + 1) * floats];
                match value {
                    Value::Nil => {
                        self.meta.init.fill(rows[i], self.meta.layout, row);
                        self.stats.rows_initial += 1;
                    }
                    Value::BulkString(bytes) => decode_value(&keys[i], &bytes, row).map_err(|m| self.corrupt(rows[i], *slot, &node, m))?,
                    other => return Err(self.corrupt(rows[i], *slot, &node, format!("unexpected value {other:?}"))),
                }
            }
        }
        self.stats.rows_read += rows.len() as u64;
        Ok(())
    }

    fn corrupt(&self, row: u64, slot: u16, node: &str, message: String) -> RemoteError {
        RemoteError::Corrupt { table: self.config.table.clone(), key: self.key(row), slot, node: node.to_string(), message }
    }

    /// Writes whole rows, `data[i * floats..]` into `rows[i]`, a later duplicate winning:
    /// one MSET per slot, the MSETs of a node in one pipeline (then `WAIT` when the
    /// config asks for replicas).
    pub fn write_rows(&mut self, rows: &[u64], data: &[f32]) -> Result<(), RemoteError> {
        self.check_request("write_rows", rows, data.len())?;
        let floats = self.meta.layout.words();
        // The last write of each row only: a retried command then cannot bring back an
        // older value of a row written twice in one call.
        let mut last = rustc_hash::FxHashMap::default();
        for (i, &row) in rows.iter().enumerate() {
            last.insert(row, i);
        }
        let keys: Vec<String> = rows.iter().map(|&row| self.key(row)).collect();
        let groups = Self::group_by_slot(&keys, (0..rows.len()).filter(|&i| last.get(&rows[i]) == Some(&i)));
        let mut commands = Vec::with_capacity(groups.len());
        let mut first_keys = Vec::with_capacity(groups.len());
        for (slot, list) in &groups {
            let mut mset = redis::cmd("MSET");
            for &i in list {
                mset.arg(&keys[i]).arg(encode_value(&keys[i], &data[i * floats..(i + 1) * floats]));
            }
            commands.push((*slot, mset));
            first_keys.push(keys[list[0]].clone());
        }
        self.run(commands, first_keys, "writing")?;
        self.stats.rows_written += rows.len() as u64;
        Ok(())
    }
}

/// The value of a row: its floats little-endian, then the CRC32 of the key and those
/// bytes (so a value under another row's key fails too).
pub fn encode_value(key: &str, row: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 * row.len() + 4);
    for v in row {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let crc = checksum(key, &bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn checksum(key: &str, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key.as_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Checks and decodes a value written by [`encode_value`] into `row`.
fn decode_value(key: &str, bytes: &[u8], row: &mut [f32]) -> Result<(), String> {
    let expected = 4 * row.len() + 4;
    if bytes.len() != expected {
        return Err(format!("value is {} bytes, a row of {} floats with its checksum is {expected}", bytes.len(), row.len()));
    }
    let (payload, tail) = bytes.split_at(expected - 4);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = checksum(key, payload);
    if stored != computed {
        return Err(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"));
    }
    for (v, b) in row.iter_mut().zip(payload.chunks_exact(4)) {
        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(())
}

fn parse_scan(reply: Value) -> Result<(u64, Vec<String>), String> {
    let Value::Array(mut parts) = reply else { return Err(format!("unexpected reply {reply:?}")) };
    if parts.len() != 2 {
        return Err(format!("{} parts in the reply", parts.len()));
    }
    let keys = match parts.pop() {
        Some(Value::Array(keys)) => keys,
        other => return Err(format!("unexpected keys {other:?}")),
    };
    let cursor = match parts.pop() {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(&b).parse::<u64>().map_err(|e| format!("cursor: {e}"))?,
        other => return Err(format!("unexpected cursor {other:?}")),
    };
    let keys = keys
        .into_iter()
        .filter_map(|k| match k {
            Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        })
        .collect();
    Ok((cursor, keys))
}

impl BackingStore for RedisStore {
    fn describe(&self) -> String {
        let masters = self.cluster.masters().len();
        format!("redis cluster {} table `{}` ({masters} masters)", self.config.nodes.join(","), self.config.table)
    }
    fn layout(&self) -> RowLayout {
        self.meta.layout
    }
    fn rows(&self) -> u64 {
        self.meta.rows
    }
    fn read_rows(&mut self, rows: &[u64], out: &mut [f32]) -> Result<(), EngineError> {
        Ok(RedisStore::read_rows(self, rows, out)?)
    }
    fn write_rows(&mut self, rows: &[u64], data: &[f32]) -> Result<(), EngineError> {
        Ok(RedisStore::write_rows(self, rows, data)?)
    }
    /// Every write was acknowledged by its master (and by `replicas` replicas) before
    /// `write_rows` returned: nothing more to wait for.
    fn sync(&mut self) -> Result<(), EngineError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_a_changed_byte_or_key_fails_the_checksum() {
        let row = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.25e-7, 42.0];
        let bytes = encode_value("strata:{t:0}:3", &row);
        let mut back = [0f32; 5];
        decode_value("strata:{t:0}:3", &bytes, &mut back).unwrap();
        assert_eq!(row.map(f32::to_bits), back.map(f32::to_bits));
        let mut bad = bytes.clone();
        bad[6] ^= 0x10;
        assert!(decode_value("strata:{t:0}:3", &bad, &mut back).unwrap_err().contains("checksum mismatch"));
        assert!(decode_value("strata:{t:0}:4", &bytes, &mut back).unwrap_err().contains("checksum mismatch"));
        assert!(decode_value("strata:{t:0}:3", &bytes[..8], &mut back).unwrap_err().contains("8 bytes"));
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_named() {
        let good = RemoteConfig::new(vec!["127.0.0.1:7000".into()], "emb");
        assert!(good.validate().is_ok());
        type Change = fn(&mut RemoteConfig);
        let cases: [(Change, &str); 6] = [
            (|c| c.nodes.clear(), "nodes"),
            (|c| c.nodes = vec!["localhost".into()], "`localhost`"),
            (|c| c.nodes = vec!["h:99999".into()], "`h:99999`"),
            (|c| c.table = "a{b}".into(), "table"),
            (|c| c.block_rows = 0, "block_rows"),
            (|c| c.retry_seconds = f64::NAN, "retry_seconds"),
        ];
        for (change, named) in cases {
            let mut config = good.clone();
            change(&mut config);
            let message = config.validate().unwrap_err();
            assert!(message.contains(named), "{message}");
        }
        let toml_text = "nodes = [\"127.0.0.1:1\"]\ntable = \"t\"\nreplica = 1\n";
        assert!(toml::from_str::<RemoteConfig>(toml_text).unwrap_err().to_string().contains("replica"));
    }
}
