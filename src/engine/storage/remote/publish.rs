//! Publication over the cluster: a trainer's updated rows made visible to serving
//! replicas in numbered versions. [`Publisher`] writes a version's rows into the
//! published table, then its dense parameters, then one entry on the table's update
//! stream (a Redis Stream); [`Follower`] reads that stream, hands each version's rows
//! to the replica to take in, and says how far behind the publisher it is. See
//! docs/SCALE-OUT.md for the protocol and its guarantees.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use redis::Value;
use serde::Serialize;

use super::{key_slot, RedisStore, RemoteConfig, RemoteError};
use crate::engine::{RowInit, RowLayout};

/// Entries the update stream keeps (older ones are trimmed; a follower further behind
/// than this takes in every row again).
const STREAM_ENTRIES: usize = 1024;
/// Versions whose dense parameters stay readable after a newer one is published.
const DENSE_VERSIONS: u64 = 8;
/// Stream entries one poll reads at most.
const POLL_ENTRIES: usize = 64;

fn stream_key(table: &str) -> String {
    format!("strata:{{{table}:updates}}")
}

fn dense_key(table: &str, version: u64) -> String {
    format!("strata:{{{table}:dense}}:{version}")
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One published version, as the update stream holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub version: u64,
    /// When the publisher wrote the entry (its clock, milliseconds since the epoch).
    pub published_ms: u64,
    /// The rows that changed since the previous version.
    pub rows: Vec<u64>,
}

/// The rows a version changed, as [`Follower::poll`] hands them to the replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed<'a> {
    Rows(&'a [u64]),
    /// Any row may have changed (versions the stream no longer holds were missed).
    All,
}

/// The trainer's side: publishes versions of a table to the cluster.
pub struct Publisher {
    store: RedisStore,
    version: u64,
}

impl Publisher {
    /// Creates the published table `config.table` afresh (version 0: every row its
    /// initial value, no stream entry), removing an earlier one of that name.
    pub fn create(config: &RemoteConfig, rows: u64, layout: RowLayout, init: RowInit) -> Result<Publisher, RemoteError> {
        Ok(Publisher { store: RedisStore::create(config, rows, layout, init)?, version: 0 })
    }

    /// Opens a published table to publish after its last version.
    pub fn open(config: &RemoteConfig) -> Result<Publisher, RemoteError> {
        let mut store = RedisStore::open(config)?;
        let version = last_entry(&mut store)?.map_or(0, |update| update.version);
        Ok(Publisher { store, version })
    }

    /// The last version published (0: none yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Publishes the next version: `rows` take the values `data` (whole rows, values
    /// and state, as [`RedisStore::write_rows`] takes them) and `dense` is the model's
    /// dense parameters at this version (any bytes; empty for none). The rows and the
    /// dense parameters are in the cluster before the stream entry that announces
    /// them, so a follower that has read the entry reads them all. Returns the version.
    pub fn publish(&mut self, rows: &[u64], data: &[f32], dense: &[u8]) -> Result<u64, RemoteError> {
        let version = self.version + 1;
        self.store.write_rows(rows, data)?;
        let table = self.store.config().table.clone();
        let key = dense_key(&table, version);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(dense);
        self.store.run(vec![(key_slot(key.as_bytes()), set)], vec![key], "writing")?;
        let mut row_bytes = Vec::with_capacity(rows.len() * 8);
        for row in rows {
            row_bytes.extend_from_slice(&row.to_le_bytes());
        }
        let stream = stream_key(&table);
        let mut add = redis::cmd("XADD");
        add.arg(&stream).arg("MAXLEN").arg("~").arg(STREAM_ENTRIES).arg("*");
        add.arg("version").arg(version).arg("time_ms").arg(now_ms()).arg("rows").arg(row_bytes);
        self.store.run(vec![(key_slot(stream.as_bytes()), add)], vec![stream], "writing")?;
        if version > DENSE_VERSIONS {
            let old = dense_key(&table, version - DENSE_VERSIONS);
            let mut del = redis::cmd("DEL");
            del.arg(&old);
            self.store.run(vec![(key_slot(old.as_bytes()), del)], vec![old], "removing")?;
        }
        self.version = version;
        Ok(version)
    }
}

/// The last entry of the table's update stream, if any.
fn last_entry(store: &mut RedisStore) -> Result<Option<Update>, RemoteError> {
    let stream = stream_key(&store.config().table);
    let mut last = redis::cmd("XREVRANGE");
    last.arg(&stream).arg("+").arg("-").arg("COUNT").arg(1);
    let reply = store.run(vec![(key_slot(stream.as_bytes()), last)], vec![stream.clone()], "reading")?;
    let entries = parse_entries(reply.into_iter().next().unwrap_or(Value::Nil)).map_err(|m| stream_error(store, &stream, m))?;
    Ok(entries.into_iter().next().map(|(_, update)| update))
}

fn stream_error(store: &RedisStore, stream: &str, message: String) -> RemoteError {
    store.table_error(format!("update stream {stream}: {message}"))
}

/// Stream entries (`[[id, [field, value, ..]], ..]`) as `(id, update)`.
fn parse_entries(reply: Value) -> Result<Vec<(String, Update)>, String> {
    let entries = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(entries) => entries,
        other => return Err(format!("expected a list of entries, got {other:?}")),
    };
    entries.into_iter().map(parse_entry).collect()
}

fn parse_entry(entry: Value) -> Result<(String, Update), String> {
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|e| e.to_string()),
        Value::SimpleString(s) => Ok(s.clone()),
        other => Err(format!("expected a string, got {other:?}")),
    };
    let Value::Array(parts) = entry else { return Err(format!("an entry is not a list: {entry:?}")) };
    let [id, Value::Array(fields)] = parts.as_slice() else { return Err(format!("an entry is not [id, fields]: {parts:?}")) };
    let id = text(id)?;
    let mut update = Update { version: 0, published_ms: 0, rows: Vec::new() };
    for pair in fields.chunks(2) {
        let [name, value] = pair else { return Err(format!("entry {id}: a field without a value")) };
        match text(name)?.as_str() {
            "version" => update.version = text(value)?.parse().map_err(|e| format!("entry {id}: version: {e}"))?,
            "time_ms" => update.published_ms = text(value)?.parse().map_err(|e| format!("entry {id}: time_ms: {e}"))?,
            "rows" => {
                let Value::BulkString(bytes) = value else { return Err(format!("entry {id}: rows is not bytes")) };
                if bytes.len() % 8 != 0 {
                    return Err(format!("entry {id}: rows is {} bytes, not a whole number of u64", bytes.len()));
                }
                update.rows = bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
            }
            _ => {}
        }
    }
    if update.version == 0 {
        return Err(format!("entry {id} has no version"));
    }
    Ok((id, update))
}

/// How far a follower is behind the publisher, when asked.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Staleness {
    /// The last version whose rows the replica has taken in (0: the initial rows).
    pub applied_version: u64,
    /// The last version the stream announced at the last poll that reached it.
    pub latest_version: u64,
    pub versions_behind: u64,
    /// How long the oldest version not yet taken in has been published (0 when none
    /// is; the publisher's clock against the replica's).
    pub seconds_behind: f64,
    /// Whether the cluster answered. When it did not, `error` says why, the versions
    /// are those of the last contact and `seconds_behind` is the time since it: the
    /// replica cannot know what was published since, so it counts itself stale by
    /// that much.
    pub connected: bool,
    pub seconds_since_contact: f64,
    pub error: Option<String>,
}

/// The replica's side: follows the update stream of a published table.
pub struct Follower {
    store: RedisStore,
    /// The id of the last stream entry read.
    last_id: String,
    applied: u64,
    latest: Update,
    contact: Instant,
    error: Option<String>,
}

impl Follower {
    /// Follows published table `config.table` from its initial rows (version 0). A
    /// replica should give `config` a short `retry_seconds`: a poll that cannot reach
    /// the cluster is reported as staleness, not waited out.
    pub fn open(config: &RemoteConfig) -> Result<Follower, RemoteError> {
        let store = RedisStore::open(config)?;
        let latest = Update { version: 0, published_ms: 0, rows: Vec::new() };
        Ok(Follower { store, last_id: "0-0".into(), applied: 0, latest, contact: Instant::now(), error: None })
    }

    /// Rows in the published table.
    pub fn rows(&self) -> u64 {
        self.store.meta.rows
    }

    /// Reads the next versions from the stream and hands each one's changed rows to
    /// `take_in`, in order; a version counts as applied once `take_in` has returned
    /// for it. When the stream no longer holds the versions right after the applied
    /// one (trimmed while the replica was away), `take_in` first gets
    /// [`Changed::All`]. A poll that cannot reach the cluster leaves the replica as it
    /// is and shows in [`Follower::staleness`]; an error of `take_in` is returned.
    /// Returns the versions applied.
    pub fn poll<E>(&mut self, mut take_in: impl FnMut(Changed<'_>) -> Result<(), E>) -> Result<u64, E> {
        let mut applied = 0;
        loop {
            let entries = match self.read_entries(POLL_ENTRIES) {
                Ok(entries) => entries,
                Err(error) => {
                    self.error = Some(error.to_string());
                    return Ok(applied);
                }
            };
            let more = entries.len() == POLL_ENTRIES;
            for (id, update) in entries {
                if update.version > self.applied {
                    if update.version > self.applied + 1 {
                        take_in(Changed::All)?;
                    }
                    take_in(Changed::Rows(&update.rows))?;
                    self.applied = update.version;
                    applied += 1;
                }
                self.last_id = id;
                if update.version >= self.latest.version {
                    self.latest = Update { rows: Vec::new(), ..update };
                }
            }
            if !more {
                return Ok(applied);
            }
        }
    }

    /// Up to `count` entries after the last one read, and the stream's last entry (the
    /// latest version), in one pipeline.
    fn read_entries(&mut self, count: usize) -> Result<Vec<(String, Update)>, RemoteError> {
        let stream = stream_key(&self.store.config().table);
        let slot = key_slot(stream.as_bytes());
        let mut range = redis::cmd("XRANGE");
        range.arg(&stream).arg(format!("({}", self.last_id)).arg("+").arg("COUNT").arg(count);
        let mut last = redis::cmd("XREVRANGE");
        last.arg(&stream).arg("+").arg("-").arg("COUNT").arg(1);
        let replies = self.store.run(vec![(slot, range), (slot, last)], vec![stream.clone(), stream.clone()], "reading")?;
        let mut replies = replies.into_iter();
        let entries = parse_entries(replies.next().unwrap_or(Value::Nil)).map_err(|m| stream_error(&self.store, &stream, m))?;
        let newest = parse_entries(replies.next().unwrap_or(Value::Nil)).map_err(|m| stream_error(&self.store, &stream, m))?;
        if let Some((_, newest)) = newest.into_iter().next() {
            if newest.version > self.latest.version {
                self.latest = Update { rows: Vec::new(), ..newest };
            }
        }
        self.error = None;
        self.contact = Instant::now();
        Ok(entries)
    }

    /// Whether the last poll or staleness report reached the cluster.
    pub fn reachable(&self) -> bool {
        self.error.is_none()
    }

    /// The last version applied.
    pub fn applied_version(&self) -> u64 {
        self.applied
    }

    /// The dense parameters published with `version` (kept for the last
    /// `DENSE_VERSIONS` versions; `None` for version 0 or one no longer kept).
    pub fn dense(&mut self, version: u64) -> Result<Option<Vec<u8>>, RemoteError> {
        let key = dense_key(&self.store.config().table, version);
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let reply = self.store.run(vec![(key_slot(key.as_bytes()), get)], vec![key], "reading")?;
        Ok(match reply.into_iter().next() {
            Some(Value::BulkString(bytes)) => Some(bytes),
            _ => None,
        })
    }

    /// How far behind the publisher the replica is now: asks the stream for its
    /// latest version and the oldest one not yet applied (without applying it). When
    /// the cluster cannot be reached the figures are those of the last contact.
    pub fn staleness(&mut self) -> Staleness {
        let oldest_pending = match self.read_entries(1) {
            Ok(entries) => entries.first().map(|(_, update)| update.published_ms),
            Err(error) => {
                self.error = Some(error.to_string());
                None
            }
        };
        let behind = self.latest.version.saturating_sub(self.applied);
        let since_contact = self.contact.elapsed().as_secs_f64();
        Staleness {
            applied_version: self.applied,
            latest_version: self.latest.version.max(self.applied),
            versions_behind: behind,
            seconds_behind: match (&self.error, oldest_pending.filter(|_| behind > 0)) {
                (Some(_), _) => since_contact,
                (None, Some(ms)) => now_ms().saturating_sub(ms) as f64 / 1e3,
                (None, None) => 0.0,
            },
            connected: self.reachable(),
            seconds_since_contact: since_contact,
            error: self.error.clone(),
        }
    }
}
