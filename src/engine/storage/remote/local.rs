//! [`LocalCluster`]: a real 3-master + 3-replica Redis Cluster on this machine, for the
//! remote tier's tests and `strata bench remote`: started from Debian's `redis-server`
//! and `redis-cli` on free loopback ports with its data in a temporary folder, and torn
//! down (every server killed, the folder removed) when it is dropped, a panicking test
//! included, and when the process that started it dies. Nothing is assumed running.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to start, form and agree on its slots.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// `cluster-node-timeout` of every node: how long a master may be unreachable before its
/// replica takes over (short, so that a failover test takes seconds).
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// One `redis-server` process of the cluster.
pub struct Server {
    pub port: u16,
    /// The cluster bus port.
    bus: u16,
    child: Option<Child>,
}

impl Server {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// A running cluster of six nodes (three masters, each with one replica).
pub struct LocalCluster {
    servers: Vec<Server>,
    /// Dropped after the servers are killed (see `Drop`): removes the data folder.
    dir: tempfile::TempDir,
}

/// `count` distinct ports free on 127.0.0.1 right now (all bound at once, then released).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let fail = |e: std::io::Error| format!("finding a free loopback port: {e}");
    let listeners = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").map_err(fail)).collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(fail)).collect()
}

fn require(program: &str) -> Result<(), String> {
    let found = Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    match found.is_ok_and(|s| s.success()) {
        true => Ok(()),
        false => Err(format!("`{program}` not found: a local Redis Cluster needs Redis from Debian's packages (`make redis` installs it)")),
    }
}

/// A connection to one node, or `None` while it does not answer yet.
fn connect(addr: &str) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let con = client.get_connection_with_timeout(Duration::from_millis(500)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(con)
}

fn query(addr: &str, args: &[&str]) -> Option<redis::Value> {
    let mut con = connect(addr)?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(&mut con).ok()
}

/// The text of a reply (`CLUSTER INFO`, `INFO`, `CLUSTER NODES`).
fn text(value: redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        redis::Value::SimpleString(s) => s,
        redis::Value::VerbatimString { text, .. } => text,
        other => format!("{other:?}"),
    }
}

fn info(addr: &str, args: &[&str]) -> Option<String> {
    query(addr, args).map(text)
}

impl LocalCluster {
    /// Starts six servers on free ports, creates the cluster with `redis-cli --cluster
    /// create ... --cluster-replicas 1` and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots and every replica is in sync. An error
    /// (after tearing down what it started) when Redis is missing or the cluster does
    /// not form in time.
    pub fn start() -> Result<LocalCluster, String> {
        require("redis-server")?;
        require("redis-cli")?;
        let deadline = Instant::now() + START_TIMEOUT;
        // A port found free may be taken by another process before its server binds it:
        // such a start is torn down and tried again on other ports.
        let mut tries = 0;
        let cluster = loop {
            tries += 1;
            let dir = tempfile::tempdir().map_err(|e| format!("a temp folder for the cluster: {e}"))?;
            let ports = free_ports(12)?;
            let mut cluster = LocalCluster { servers: Vec::new(), dir };
            for i in 0..6 {
                let server = cluster.spawn(ports[i], ports[6 + i])?;
                cluster.servers.push(server);
            }
            match cluster.wait_for_pings(deadline) {
                Ok(()) => break cluster,
                Err(message) if tries < 3 => eprintln!("Redis cluster: {message}; starting again on other ports"),
                Err(message) => return Err(format!("Redis cluster: {message}\n{}", cluster.logs())),
            }
        };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        create.args(cluster.servers.iter().map(Server::addr));
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = create.stdin(Stdio::null()).output().map_err(|e| format!("running redis-cli --cluster create: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        cluster.wait_healthy(deadline)?;
        Ok(cluster)
    }

    fn spawn(&self, port: u16, bus: u16) -> Result<Server, String> {
        let data = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string()])
            .args(["--bind", "127.0.0.1", "--protected-mode", "no", "--daemonize", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .arg("--cluster-config-file")
            .arg(data.join("nodes.conf"))
            .arg("--dir")
            .arg(&data)
            .arg("--logfile")
            .arg(data.join("redis.log"))
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent; it
        // makes the kernel kill the server if the process that started it dies without
        // running its destructors (killed by a signal), so no server outlives it.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| format!("starting redis-server: {e}"))?;
        Ok(Server { port, bus, child: Some(child) })
    }

    /// Waits until every running server answers PING; an error when one has exited.
    fn wait_for_pings(&mut self, deadline: Instant) -> Result<(), String> {
        let root = self.dir.path().to_path_buf();
        for server in self.servers.iter_mut().filter(|s| s.running()) {
            let addr = server.addr();
            // Ours, not another test's server on a port both found free: its data folder.
            let data = root.join(server.port.to_string());
            let ours = |reply: Option<redis::Value>| match reply {
                Some(redis::Value::Array(pair)) => pair.get(1).is_some_and(|d| Path::new(&text(d.clone())) == data),
                _ => false,
            };
            while !ours(query(&addr, &["CONFIG", "GET", "dir"])) {
                if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    server.child = None;
                    return Err(format!("{addr} exited at start ({status})"));
                }
                if Instant::now() > deadline {
                    return Err(format!("timed out waiting until {addr} answers PING"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Polls `ready` every 50 ms until it holds; an error with the nodes' logs at the
    /// deadline.
    fn wait_until(&self, deadline: Instant, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
        while !ready() {
            if Instant::now() > deadline {
                return Err(format!("Redis cluster: timed out waiting until {what}\n{}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until every running node says `cluster_state:ok` with all slots served and
    /// every running replica's link to its master is up.
    pub fn wait_healthy(&self, deadline: Instant) -> Result<(), String> {
        for server in self.servers.iter().filter(|s| s.running()) {
            let addr = server.addr();
            self.wait_until(deadline, &format!("{addr} reports cluster_state:ok"), || {
                info(&addr, &["CLUSTER", "INFO"]).is_some_and(|i| i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384"))
            })?;
            self.wait_until(deadline, &format!("{addr} has its replication link up"), || {
                info(&addr, &["INFO", "replication"]).is_some_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
            })?;
        }
        Ok(())
    }

    /// Every node's address, masters and replicas (any of them seeds a client).
    pub fn nodes(&self) -> Vec<String> {
        self.servers.iter().map(Server::addr).collect()
    }

    /// The addresses of the nodes that are masters now, as a running node sees them
    /// (none when no node answers).
    pub fn masters(&self) -> Vec<String> {
        let nodes = self.servers.iter().filter(|s| s.running()).find_map(|s| info(&s.addr(), &["CLUSTER", "NODES"]));
        nodes
            .unwrap_or_default()
            .lines()
            .filter(|line| line.split(' ').nth(2).is_some_and(|flags| flags.contains("master") && !flags.contains("fail")))
            .filter_map(|line| line.split(' ').nth(1))
            .map(|addr| addr.split('@').next().unwrap_or(addr).to_string())
            .collect()
    }

    /// Kills the server at `addr` (SIGKILL, as a crash) and waits for it to exit; an
    /// error when no node of the cluster is at `addr`.
    pub fn kill(&mut self, addr: &str) -> Result<(), String> {
        let server = self.servers.iter_mut().find(|s| s.addr() == addr).ok_or_else(|| format!("no node {addr} in the cluster"))?;
        if let Some(mut child) = server.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Waits until a replica has taken over the slots of master `addr` (killed) and the
    /// cluster is healthy again. Restarting a killed master before that loses its rows:
    /// it comes back empty (no data on disk) still owning its slots, and its replica
    /// copies the emptiness.
    pub fn wait_failover(&self, addr: &str) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        self.wait_until(deadline, &format!("a replica takes over from {addr}"), || {
            let masters = self.masters();
            masters.len() == 3 && !masters.iter().any(|m| m == addr)
        })?;
        self.wait_healthy(deadline)
    }

    /// The replica of master `addr`, as a running node sees it.
    pub fn replica_of(&self, addr: &str) -> Option<String> {
        let nodes = self.servers.iter().filter(|s| s.running()).find_map(|s| info(&s.addr(), &["CLUSTER", "NODES"]))?;
        let address = |line: &str| line.split(' ').nth(1).map(|a| a.split('@').next().unwrap_or(a).to_string());
        let master_id = nodes.lines().find(|line| address(line).as_deref() == Some(addr))?.split(' ').next()?.to_string();
        nodes.lines().find(|line| line.split(' ').nth(3) == Some(master_id.as_str())).and_then(address)
    }

    /// Starts the server at `addr` again after [`LocalCluster::kill`], on its ports and
    /// with its cluster config (so it rejoins in its old role) but empty (the nodes keep
    /// no data on disk), and waits until the cluster is healthy again.
    pub fn restart(&mut self, addr: &str) -> Result<(), String> {
        let index = self.servers.iter().position(|s| s.addr() == addr).ok_or_else(|| format!("no node {addr} in the cluster"))?;
        if self.servers[index].running() {
            return Err(format!("{addr} is running"));
        }
        let (port, bus) = (self.servers[index].port, self.servers[index].bus);
        self.servers[index] = self.spawn(port, bus)?;
        let deadline = Instant::now() + START_TIMEOUT;
        self.wait_for_pings(deadline)?;
        self.wait_healthy(deadline)
    }

    /// The folder holding the nodes' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of every node's log, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for server in &self.servers {
            let log = std::fs::read_to_string(self.dir.path().join(server.port.to_string()).join("redis.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            out += &format!("--- {} ---\n{}\n", server.addr(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        out
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // `dir` is removed when the fields drop, after every server is gone.
    }
}
