//! The cluster client of the remote tier: the slot of a key (CRC16 of its hash tag), the
//! map of slots to masters read with `CLUSTER SLOTS`, one plain connection per master,
//! and [`Cluster::execute`], which sends each node its commands in one pipeline and
//! retries what failed (a lost connection, a timeout, `MOVED`, `ASK`, `TRYAGAIN`,
//! `CLUSTERDOWN`, a write not yet on its replicas) with the map read again, until the
//! commands succeed or the retry time is spent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::{Cmd, Value};

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16384;
/// Commands sent to one node in one pipeline at most.
const PIPELINE_COMMANDS: usize = 256;
/// The first pause between two tries, doubled each try up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// The slot of `key`: CRC16 (XMODEM) of its hash tag (the bytes between the first `{`
/// and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    (crc16(hashed) as usize % SLOTS) as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// Why a command was not done on one try.
#[derive(Clone, Debug)]
pub struct Failure {
    pub node: String,
    pub slot: u16,
    pub reason: String,
}

/// What [`Cluster::execute`] gives up with.
#[derive(Debug)]
pub enum ExecuteError {
    /// Command `index` failed on every try until the retry time was spent.
    GaveUp { index: usize, failure: Failure, attempts: u32, seconds: f64 },
    /// Command `index` got an error no retry can mend (out of memory, a wrong type).
    Refused { index: usize, failure: Failure },
}

/// A master and its connection (opened on first use, dropped after any failure).
struct Node {
    addr: String,
    connection: Option<redis::Connection>,
    /// Replicas the master had at its last `ROLE` reply (`None`: not asked yet).
    replicas: Option<u32>,
}

/// The slots of a Redis Cluster and a connection to each master.
pub struct Cluster {
    seeds: Vec<String>,
    timeout: Duration,
    retry: Duration,
    nodes: Vec<Node>,
    /// Slot -> index into `nodes` (`u16::MAX`: no master serves it).
    slots: Vec<u16>,
    /// Tries that failed and were retried (reported with the store's counters).
    pub retries: u64,
    /// Times the slot map was read again.
    pub refreshes: u64,
    /// Pipelines sent (one node's commands of one try, at most `PIPELINE_COMMANDS`).
    pub pipelines: u64,
}

impl Cluster {
    /// Reads the slot map from the first of `seeds` that answers. `timeout` bounds each
    /// connect and each reply; `retry` is how long a failing command is tried again.
    pub fn connect(seeds: &[String], timeout: Duration, retry: Duration) -> Result<Cluster, String> {
        let mut cluster = Cluster {
            seeds: seeds.to_vec(),
            timeout,
            retry,
            nodes: Vec::new(),
            slots: vec![u16::MAX; SLOTS],
            retries: 0,
            refreshes: 0,
            pipelines: 0,
        };
        cluster.refresh()?;
        Ok(cluster)
    }

    /// The masters, in the order of the slot map.
    pub fn masters(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// The master serving `slot`, if the map names one.
    pub fn node_of(&self, slot: u16) -> Option<&str> {
        self.nodes.get(self.slots[slot as usize] as usize).map(|n| n.addr.as_str())
    }

    fn open(&self, addr: &str) -> Result<redis::Connection, String> {
        let client = redis::Client::open(format!("redis://{addr}/")).map_err(|e| e.to_string())?;
        let connection = client.get_connection_with_timeout(self.timeout).map_err(|e| e.to_string())?;
        // Replies may wait for replicas (WAIT, bounded by `timeout`): room for that.
        connection.set_read_timeout(Some(self.timeout * 2)).map_err(|e| e.to_string())?;
        connection.set_write_timeout(Some(self.timeout * 2)).map_err(|e| e.to_string())?;
        Ok(connection)
    }

    /// Runs `command` on the node at `addr` (a SCAN of that node's keys), tried again on
    /// a new connection as `execute` tries (an interrupted read, a dropped connection)
    /// until `retry` has passed.
    pub fn scan(&mut self, addr: &str, command: &Cmd) -> Result<Value, String> {
        let index = self.nodes.iter().position(|n| n.addr == addr).ok_or_else(|| format!("{addr} is not a master"))?;
        let deadline = Instant::now() + self.retry;
        let mut pause = Duration::from_millis(20);
        loop {
            let connection = match self.nodes[index].connection.take() {
                Some(c) => Ok(c),
                None => self.open(addr),
            };
            // A failed exchange leaves the connection's state unknown: it is dropped.
            let reply = connection.and_then(|mut c| command.query::<Value>(&mut c).map(|reply| (c, reply)).map_err(|e| e.to_string()));
            match reply {
                Ok((connection, reply)) => {
                    self.nodes[index].connection = Some(connection);
                    return Ok(reply);
                }
                Err(e) if Instant::now() >= deadline => return Err(format!("{addr}: {e}")),
                Err(_) => {
                    self.retries += 1;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
            }
        }
    }

    /// Reads the slot map again, from the known masters first, then the seeds; keeps the
    /// connections of masters still in it. Errors when no node answers.
    pub fn refresh(&mut self) -> Result<(), String> {
        self.refreshes += 1;
        let mut candidates: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut errors = Vec::new();
        for addr in &candidates {
            let reply =
                self.open(addr).and_then(|mut c| redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut c).map_err(|e| e.to_string()));
            match reply.and_then(|v| parse_slots(addr, v)) {
                Ok(ranges) if !ranges.is_empty() => {
                    self.install(ranges);
                    return Ok(());
                }
                Ok(_) => errors.push(format!("{addr}: serves no slots")),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    fn install(&mut self, ranges: Vec<(u16, u16, String)>) {
        let mut old: HashMap<String, (Option<redis::Connection>, Option<u32>)> =
            self.nodes.drain(..).map(|n| (n.addr, (n.connection, n.replicas))).collect();
        self.slots.fill(u16::MAX);
        for (start, end, addr) in ranges {
            let index = match self.nodes.iter().position(|n| n.addr == addr) {
                Some(i) => i,
                None => {
                    let (connection, replicas) = old.remove(&addr).unwrap_or((None, None));
                    self.nodes.push(Node { addr, connection, replicas });
                    self.nodes.len() - 1
                }
            };
            for slot in start..=end.min(SLOTS as u16 - 1) {
                self.slots[slot as usize] = index as u16;
            }
        }
    }

    /// Runs `commands` (each with the slot of its keys), one pipeline per node (at most
    /// `PIPELINE_COMMANDS` each), and returns their replies in order. After a node's
    /// writes it sends `WAIT replicas` when `replicas > 0`, and a write counts as done
    /// only when that many replicas have it (or, where the master has fewer replicas
    /// now, every one it has). What fails is tried again, only that,
    /// with the slot map read again, until the retry time is spent.
    pub fn execute(&mut self, commands: &[(u16, Cmd)], replicas: u32) -> Result<Vec<Value>, ExecuteError> {
        let start = Instant::now();
        let mut results = vec![Value::Nil; commands.len()];
        let mut pending: Vec<usize> = (0..commands.len()).collect();
        // Commands an `ASK` sent elsewhere for their next try.
        let mut ask: HashMap<usize, String> = HashMap::new();
        let mut attempts = 0u32;
        let mut pause = FIRST_PAUSE;
        loop {
            attempts += 1;
            let mut outcome = Outcome::default();
            let mut by_node: Vec<(String, Vec<usize>)> = Vec::new();
            for &i in &pending {
                let slot = commands[i].0;
                match ask.get(&i).map(String::as_str).or_else(|| self.node_of(slot)) {
                    Some(addr) => match by_node.iter_mut().find(|(a, _)| a == addr) {
                        Some((_, list)) => list.push(i),
                        None => by_node.push((addr.to_string(), vec![i])),
                    },
                    None => outcome.failed.push((i, failure_at("none", slot, "no master serves the slot"))),
                }
            }
            // Every node's pipelines are sent before any reply is read, so that the
            // masters work on them at once.
            let mut sent = Vec::with_capacity(by_node.len());
            for (addr, indexes) in by_node {
                sent.extend(self.send_to(&addr, indexes, commands, (replicas, &ask), &mut outcome));
            }
            for sent in sent {
                self.receive(sent, commands, (replicas, &ask), &mut results, &mut outcome)?;
            }
            if outcome.failed.is_empty() {
                return Ok(results);
            }
            let elapsed = start.elapsed();
            if elapsed >= self.retry {
                let (index, failure) = outcome.failed.swap_remove(0);
                return Err(ExecuteError::GaveUp { index, failure, attempts, seconds: elapsed.as_secs_f64() });
            }
            let (index, failure) = &outcome.failed[0];
            tracing::debug!("redis: command {index} (slot {}) on {}: {}; trying again", failure.slot, failure.node, failure.reason);
            self.retries += 1;
            std::thread::sleep(pause.min(self.retry.saturating_sub(elapsed)));
            pause = (pause * 2).min(MAX_PAUSE);
            ask = outcome.asks.into_iter().collect();
            if let Err(e) = self.refresh() {
                tracing::debug!("redis: reading the slot map: {e}");
            }
            pending = outcome.failed.into_iter().map(|(i, _)| i).collect();
        }
    }

    /// Sends `indexes` (commands for `addr`) as pipelines of at most
    /// `PIPELINE_COMMANDS`, each followed by `WAIT` and `ROLE` when `replicas > 0`,
    /// without reading a reply; what cannot be sent goes into `outcome`.
    fn send_to(
        &mut self,
        addr: &str,
        indexes: Vec<usize>,
        commands: &[(u16, Cmd)],
        (replicas, ask): (u32, &HashMap<usize, String>),
        outcome: &mut Outcome,
    ) -> Option<Sent> {
        let node = match self.nodes.iter().position(|n| n.addr == addr) {
            Some(index) => index,
            None => {
                // An ASK target the map does not hold (yet).
                self.nodes.push(Node { addr: addr.to_string(), connection: None, replicas: None });
                self.nodes.len() - 1
            }
        };
        // Waits for the replicas the master has, as far as its last ROLE said: a master
        // whose replica took over from an earlier one has none, and WAIT would time out.
        let wanted = replicas.min(self.nodes[node].replicas.unwrap_or(replicas));
        let mut packed = Vec::new();
        for chunk in indexes.chunks(PIPELINE_COMMANDS) {
            for &i in chunk {
                if ask.contains_key(&i) {
                    packed.extend(redis::cmd("ASKING").get_packed_command());
                }
                commands[i].1.write_packed_command(&mut packed);
            }
            if replicas > 0 {
                packed.extend(redis::cmd("WAIT").arg(wanted).arg(self.timeout.as_millis() as u64).get_packed_command());
                packed.extend(redis::cmd("ROLE").get_packed_command());
            }
            self.pipelines += 1;
        }
        let fail_all = |outcome: &mut Outcome, reason: String| {
            outcome.failed.extend(indexes.iter().map(|&i| (i, failure_at(addr, commands[i].0, &reason))));
        };
        let connection = match self.nodes[node].connection.take() {
            Some(c) => Ok(c),
            None => self.open(addr),
        };
        let mut connection = match connection {
            Ok(c) => c,
            Err(e) => {
                fail_all(outcome, format!("connecting: {e}"));
                return None;
            }
        };
        if let Err(e) = connection.send_packed_command(&packed) {
            // The connection's state is unknown after a failed exchange: dropped.
            fail_all(outcome, e.to_string());
            return None;
        }
        Some(Sent { node, connection, indexes })
    }

    /// Reads the replies of what `send_to` sent: into `results`, what failed (and where
    /// an `ASK` sends it) into `outcome`; the connection goes back to its node.
    fn receive(
        &mut self,
        sent: Sent,
        commands: &[(u16, Cmd)],
        (replicas, ask): (u32, &HashMap<usize, String>),
        results: &mut [Value],
        outcome: &mut Outcome,
    ) -> Result<(), ExecuteError> {
        let Sent { node, mut connection, indexes } = sent;
        let addr = self.nodes[node].addr.clone();
        for (c, chunk) in indexes.chunks(PIPELINE_COMMANDS).enumerate() {
            let expected = chunk.len() + chunk.iter().filter(|i| ask.contains_key(i)).count() + if replicas > 0 { 2 } else { 0 };
            let values = (0..expected).map(|_| connection.recv_response()).collect::<Result<Vec<Value>, _>>();
            let values = match values {
                Ok(values) => values,
                Err(e) => {
                    // This chunk's replies and every later chunk's are lost with the
                    // connection, whose state is unknown now: dropped.
                    let reason = e.to_string();
                    let lost = &indexes[c * PIPELINE_COMMANDS..];
                    outcome.failed.extend(lost.iter().map(|&i| (i, failure_at(&addr, commands[i].0, &reason))));
                    return Ok(());
                }
            };
            self.take_replies(node, chunk, values, commands, (replicas, ask), results, outcome)?;
        }
        self.nodes[node].connection = Some(connection);
        Ok(())
    }

    /// One pipeline's replies (`values`, in the order sent) for the commands `chunk`.
    #[allow(clippy::too_many_arguments)]
    fn take_replies(
        &mut self,
        node: usize,
        chunk: &[usize],
        values: Vec<Value>,
        commands: &[(u16, Cmd)],
        (replicas, ask): (u32, &HashMap<usize, String>),
        results: &mut [Value],
        outcome: &mut Outcome,
    ) -> Result<(), ExecuteError> {
        let addr = self.nodes[node].addr.clone();
        let addr = addr.as_str();
        let mut values = values.into_iter();
        let mut done = Vec::with_capacity(chunk.len());
        for &i in chunk {
            if ask.contains_key(&i) {
                values.next();
            }
            let slot = commands[i].0;
            match values.next() {
                Some(Value::ServerError(e)) => {
                    let reason = format!("{} {}", e.code(), e.details().unwrap_or_default());
                    match e.kind() {
                        Some(redis::ServerErrorKind::Ask) => {
                            // `ASK <slot> <addr>`: the next try goes there, after ASKING.
                            if let Some(target) = e.details().and_then(|d| d.split(' ').nth(1)) {
                                outcome.asks.push((i, target.to_string()));
                            }
                            outcome.failed.push((i, failure_at(addr, slot, &reason)));
                        }
                        Some(
                            redis::ServerErrorKind::Moved
                            | redis::ServerErrorKind::TryAgain
                            | redis::ServerErrorKind::ClusterDown
                            | redis::ServerErrorKind::MasterDown
                            | redis::ServerErrorKind::BusyLoading
                            | redis::ServerErrorKind::ReadOnly,
                        ) => outcome.failed.push((i, failure_at(addr, slot, &reason))),
                        _ => return Err(ExecuteError::Refused { index: i, failure: failure_at(addr, slot, &reason) }),
                    }
                }
                Some(value) => done.push((i, value)),
                None => outcome.failed.push((i, failure_at(addr, slot, "the pipeline's reply is short"))),
            }
        }
        if replicas > 0 {
            let acked = match values.next() {
                Some(Value::Int(n)) => n,
                _ => -1,
            };
            let attached = match values.next() {
                Some(Value::Array(role)) => match role.get(2) {
                    Some(Value::Array(list)) => list.len() as u32,
                    _ => 0,
                },
                _ => replicas,
            };
            if attached < replicas && self.nodes[node].replicas != Some(attached) {
                tracing::warn!("redis: {addr} has {attached} replicas, fewer than the {replicas} each write is to reach");
            }
            // Needed: what was asked for, or every replica the master has.
            let needed = i64::from(replicas.min(attached));
            if acked < needed {
                let reason = format!("the writes reached {} of the {needed} replicas asked for (WAIT)", acked.max(0));
                outcome.failed.extend(done.drain(..).map(|(i, _)| (i, failure_at(addr, commands[i].0, &reason))));
            }
            self.nodes[node].replicas = Some(attached);
        }
        for (i, value) in done {
            results[i] = value;
        }
        Ok(())
    }
}

/// A node's pipelines, sent and not yet read.
struct Sent {
    node: usize,
    connection: redis::Connection,
    indexes: Vec<usize>,
}

/// What one try left to do.
#[derive(Default)]
struct Outcome {
    failed: Vec<(usize, Failure)>,
    /// `(command, node)`: commands an `ASK` sends to another node for the next try.
    asks: Vec<(usize, String)>,
}

fn failure_at(addr: &str, slot: u16, reason: &str) -> Failure {
    Failure { node: addr.to_string(), slot, reason: reason.to_string() }
}

/// `CLUSTER SLOTS` as `(first slot, last slot, master address)`; an empty host in a
/// reply means the node asked.
fn parse_slots(asked: &str, value: Value) -> Result<Vec<(u16, u16, String)>, String> {
    let Value::Array(entries) = value else { return Err(format!("CLUSTER SLOTS: unexpected reply {value:?}")) };
    let mut ranges = Vec::new();
    for entry in entries {
        let Value::Array(fields) = entry else { return Err("CLUSTER SLOTS: an entry is not an array".into()) };
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u16::try_from(*n).map_err(|_| format!("CLUSTER SLOTS: slot {n} out of range")),
            other => Err(format!("CLUSTER SLOTS: expected a slot number, got {other:?}")),
        };
        let (start, end) = (int(fields.first())?, int(fields.get(1))?);
        let Some(Value::Array(master)) = fields.get(2) else { return Err("CLUSTER SLOTS: a range without its master".into()) };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        let port = match master.get(1) {
            Some(Value::Int(p)) => *p,
            other => return Err(format!("CLUSTER SLOTS: expected a port, got {other:?}")),
        };
        let host = if host.is_empty() || host == "?" { asked.rsplit_once(':').map_or(asked, |(h, _)| h).to_string() } else { host };
        ranges.push((start, end, format!("{host}:{port}")));
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_spec() {
        // The examples of the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), (crc16(b"{bar") as usize % SLOTS) as u16);
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo"), 12182);
    }
}
