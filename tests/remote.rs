//! The remote tier on a real Redis Cluster (3 masters + 3 replicas on loopback, started
//! by each test and torn down after it): rows round-trip bit for bit, a row never
//! written reads as its initial value, checksums catch a changed value, the tiered
//! table over the cluster matches the flat table for several policies with and without
//! the write-back buffer and read-ahead, a bad address is an error, ASK and MOVED of a
//! slot being migrated are followed, and a master killed mid-run changes nothing in the
//! rows.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata::engine::device::DeviceKind;
use strata::engine::flat::FlatTable;
use strata::engine::placement::Hierarchy;
use strata::engine::pool::Pooling;
use strata::engine::prefetch::Prefetcher;
use strata::engine::storage::remote::{key_slot, LocalCluster, RedisStore, RemoteConfig};
use strata::engine::storage::BackingStore;
use strata::engine::table::config::{TableConfig, TierConfig};
use strata::engine::table::TieredTable;
use strata::engine::{Optimizer, Rounding, RowInit, RowLayout};
use strata_policies::PolicyConfig;

mod common;
use common::transparency::{batches, check_with_store, Case, Stream};

const LAYOUT: RowLayout = RowLayout::f32(4, 1);

fn config(cluster: &LocalCluster, table: &str) -> RemoteConfig {
    RemoteConfig { block_rows: 8, retry_seconds: 20.0, ..RemoteConfig::new(cluster.nodes(), table) }
}

fn read_all(store: &mut dyn BackingStore) -> Vec<f32> {
    let rows: Vec<u64> = (0..store.rows()).collect();
    let mut out = vec![0f32; rows.len() * store.layout().words()];
    store.read_rows(&rows, &mut out).unwrap();
    out
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// A direct connection to the master that holds `key` (the node that does not answer
/// MOVED), for tampering with a value behind the store's back.
fn master_of(cluster: &LocalCluster, key: &str) -> redis::Connection {
    for addr in cluster.masters() {
        let mut con = redis::Client::open(format!("redis://{addr}/")).unwrap().get_connection().unwrap();
        if redis::cmd("GET").arg(key).query::<redis::Value>(&mut con).is_ok() {
            return con;
        }
    }
    panic!("no master holds {key}");
}

#[test]
fn the_fixture_starts_a_healthy_cluster_and_tears_it_down() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.masters().len(), 3, "{:?}", cluster.masters());
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!dir.exists(), "the data folder is removed");
}

#[test]
fn rows_round_trip_bit_for_bit_and_unwritten_rows_read_as_their_initial_value() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let init = RowInit::Uniform { seed: 7, scale: 0.1 };
    let rows = 1000u64;
    let mut store = RedisStore::create(&config(&cluster, "emb"), rows, LAYOUT, init).unwrap();
    assert_eq!(store.masters().len(), 3);
    // Never written: exactly what a table file's creation writes, RowInit's values.
    let reference = FlatTable::new(rows, LAYOUT, init);
    let expected: Vec<f32> = (0..rows).flat_map(|r| reference.row(r).to_vec()).collect();
    assert_eq!(bits(&read_all(&mut store)), bits(&expected));
    assert_eq!(store.stats().rows_initial, rows);

    // Writes of odd bit patterns (a duplicate row: the later one wins), every row after.
    let mut rng = SmallRng::seed_from_u64(1);
    let written: Vec<u64> = vec![3, 999, 3, 64, 65, 500];
    let mut data: Vec<f32> = (0..written.len() * 5).map(|_| f32::from_bits(rng.gen::<u32>() & 0x7f7f_ffff)).collect();
    data[0] = -0.0;
    data[1] = f32::MIN_POSITIVE / 2.0; // subnormal
    store.write_rows(&written, &data).unwrap();
    let mut expected = expected.clone();
    for (i, &row) in written.iter().enumerate() {
        expected[row as usize * 5..row as usize * 5 + 5].copy_from_slice(&data[i * 5..i * 5 + 5]);
    }
    assert_eq!(bits(&read_all(&mut store)), bits(&expected));
    let all: Vec<u64> = (0..rows).collect();
    let all_data: Vec<f32> = (0..rows as usize * 5).map(|i| i as f32 * 0.25 - 7.0).collect();
    store.write_rows(&all, &all_data).unwrap();
    assert_eq!(bits(&read_all(&mut store)), bits(&all_data));
    // Reads in any order, with duplicates.
    let mut out = vec![0f32; 3 * 5];
    store.read_rows(&[999, 0, 999], &mut out).unwrap();
    assert_eq!(&out[..5], &all_data[999 * 5..1000 * 5]);
    assert_eq!(&out[5..10], &all_data[..5]);

    // Opened again from its meta key: the same rows; created again: the initial rows.
    drop(store);
    let mut again = RedisStore::open(&config(&cluster, "emb")).unwrap();
    assert_eq!((again.rows(), again.layout()), (rows, LAYOUT));
    assert_eq!(bits(&read_all(&mut again)), bits(&all_data));
    let mut fresh = RedisStore::create(&config(&cluster, "emb"), rows, LAYOUT, init).unwrap();
    assert_eq!(bits(&read_all(&mut fresh)), bits(&(0..rows).flat_map(|r| reference.row(r).to_vec()).collect::<Vec<_>>()));

    // The rows of a block share a slot (the server agrees on every slot), and the
    // table's rows spread over every master.
    let mut con = redis::Client::open(format!("redis://{}/", cluster.nodes()[0])).unwrap().get_connection().unwrap();
    for row in [0u64, 7, 8, 999] {
        let key = fresh.key(row);
        let server: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key).query(&mut con).unwrap();
        assert_eq!(server, key_slot(key.as_bytes()), "{key}");
    }
    assert_eq!(key_slot(fresh.key(8).as_bytes()), key_slot(fresh.key(15).as_bytes()));
    fresh.write_rows(&all, &all_data).unwrap();
    for addr in cluster.masters() {
        let mut con = redis::Client::open(format!("redis://{addr}/")).unwrap().get_connection().unwrap();
        let keys: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert!(keys > 100, "{addr} holds {keys} keys");
    }
    let err = fresh.read_rows(&[1000], &mut [0f32; 5]).unwrap_err().to_string();
    assert!(err.contains("row 1000") && err.contains("1000 rows"), "{err}");
}

#[test]
fn a_changed_value_fails_its_checksum_with_an_error_naming_the_key_slot_and_node() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let mut store = RedisStore::create(&config(&cluster, "sums"), 100, LAYOUT, RowInit::Zeros).unwrap();
    store.write_rows(&[42], &[1.0, 2.0, 3.0, 4.0, 0.5]).unwrap();
    let key = store.key(42);
    let mut con = master_of(&cluster, &key);
    let mut value: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    value[5] ^= 0x01;
    let _: () = redis::cmd("SET").arg(&key).arg(&value).query(&mut con).unwrap();
    let err = store.read_rows(&[41, 42], &mut [0f32; 10]).unwrap_err().to_string();
    let slot = key_slot(key.as_bytes());
    assert!(err.contains(&key) && err.contains("checksum mismatch") && err.contains(&format!("slot {slot}")), "{err}");
    let _: () = redis::cmd("SET").arg(&key).arg(&value[..8]).query(&mut con).unwrap();
    let err = store.read_rows(&[42], &mut [0f32; 5]).unwrap_err().to_string();
    assert!(err.contains(&key) && err.contains("8 bytes"), "{err}");
}

#[test]
fn a_bad_node_address_or_config_is_an_error_not_a_panic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("127.0.0.1:{port}");
    let config = RemoteConfig { retry_seconds: 0.5, timeout_ms: 200, ..RemoteConfig::new(vec![nowhere.clone()], "t") };
    let err = RedisStore::create(&config, 10, LAYOUT, RowInit::Zeros).err().expect("refused").to_string();
    assert!(err.contains(&nowhere) && err.contains("CLUSTER SLOTS"), "{err}");
    let bad = RemoteConfig::new(vec!["nohost".into()], "t");
    let err = RedisStore::create(&bad, 10, LAYOUT, RowInit::Zeros).err().expect("refused").to_string();
    assert!(err.starts_with("engine.remote: nodes") && err.contains("`nohost`"), "{err}");
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let err = RedisStore::open(&config_for_missing(&cluster)).err().expect("no table").to_string();
    assert!(err.contains("no such table"), "{err}");
}

fn config_for_missing(cluster: &LocalCluster) -> RemoteConfig {
    config(cluster, "never-created")
}

/// Two segments of 10 batches of 6 bags.
const STREAM: Stream = Stream { segments: 2, batches: 10, bags: 6 };

#[test]
fn the_tiered_table_over_the_cluster_matches_the_flat_table() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let mut seed = 300;
    for policy in ["lru", "s3fifo", "lookahead:40"] {
        for (hierarchy, device_rows, host_rows, window, write_buffer_rows) in
            [(Hierarchy::Inclusive, 4, 15, 2, 0), (Hierarchy::Exclusive, 3, 9, 3, 11), (Hierarchy::Inclusive, 0, 6, 0, 5)]
        {
            let optimizer = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
            let case = Case {
                policy,
                hierarchy,
                device_rows,
                host_rows,
                window,
                optimizer,
                pooling: Pooling::Sum,
                write_buffer_rows,
                rounding: Rounding::Nearest,
            };
            let remote = config(&cluster, &format!("t{seed}"));
            let init = RowInit::Uniform { seed, scale: 0.1 };
            let store = Box::new(RedisStore::create(&remote, 120, RowLayout::new(4, &optimizer), init).unwrap());
            let reopen = |closed: Box<dyn BackingStore>| -> Box<dyn BackingStore> {
                drop(closed);
                Box::new(RedisStore::open(&remote).unwrap())
            };
            check_with_store(&case, STREAM, seed, store, &reopen);
            seed += 1;
        }
    }
}

#[test]
fn a_master_killed_mid_run_fails_over_and_the_rows_match_an_unbroken_run() {
    let mut cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let optimizer = Optimizer::RowWiseAdagrad { lr: 0.05, eps: 1e-8 };
    let layout = RowLayout::new(4, &optimizer);
    let init = RowInit::Uniform { seed: 9, scale: 0.1 };
    let rows = 200u64;
    // Every write waits for its replica, so nothing acknowledged is lost with the master.
    let remote = RemoteConfig { replicas: 1, ..config(&cluster, "failover") };
    let store = Box::new(RedisStore::create(&remote, rows, layout, init).unwrap());
    let mut reference = FlatTable::new(rows, layout, init);
    let config = TableConfig {
        device: TierConfig::rows(4, PolicyConfig::Lru),
        device_backend: DeviceKind::Emulated,
        host: TierConfig::rows(12, PolicyConfig::Lru),
        hierarchy: Hierarchy::Inclusive,
        optimizer,
        pooling: Pooling::Sum,
        write_buffer_rows: 0,
        rounding: Default::default(),
    };
    let mut table = TieredTable::new(&config, store).unwrap();
    let mut rng = SmallRng::seed_from_u64(5);
    let all = batches(&mut rng, rows, 60, 8);
    let mut prefetcher = Prefetcher::new(all.clone().into_iter(), 2);
    let mut step = 0;
    let mut victim = String::new();
    while let Some(batch) = prefetcher.next(|b| table.prefetch(b)).unwrap() {
        if step == 20 {
            victim = cluster.masters()[0].clone();
            cluster.kill(&victim).unwrap();
        }
        let mut out = vec![0f32; batch.bags() * 4];
        let mut expected = vec![0f32; batch.bags() * 4];
        table.lookup(&batch, &mut out).unwrap_or_else(|e| panic!("step {step}: lookup: {e}"));
        reference.lookup(&batch, Pooling::Sum, &mut expected);
        assert_eq!(bits(&out), bits(&expected), "step {step}");
        let grads: Vec<f32> = (0..out.len()).map(|_| rng.gen_range(-1.0..1.0)).collect();
        table.apply_gradients(&batch, &grads).unwrap_or_else(|e| panic!("step {step}: update: {e}"));
        reference.apply_gradients(&batch, &grads, &optimizer, Pooling::Sum);
        step += 1;
    }
    assert_eq!(step, all.len());
    let mut store = table.close().unwrap();
    let masters = cluster.masters();
    assert!(masters.len() == 3 && !masters.contains(&victim), "a replica took over from {victim}: {masters:?}");
    let expected: Vec<f32> = (0..rows).flat_map(|r| reference.row(r).to_vec()).collect();
    assert_eq!(bits(&read_all(store.as_mut())), bits(&expected));
}

fn connection(addr: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/")).unwrap().get_connection().unwrap()
}

/// Runs a command on one node, panicking with the node and command on an error reply.
fn on(addr: &str, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut connection(addr)).unwrap_or_else(|e| panic!("{addr}: {args:?}: {e}"))
}

#[test]
fn ask_and_moved_redirections_of_a_slot_being_migrated_are_followed() {
    let cluster = LocalCluster::start().expect("starting a local Redis Cluster");
    let init = RowInit::Uniform { seed: 4, scale: 0.1 };
    let mut store = RedisStore::create(&config(&cluster, "moving"), 64, LAYOUT, init).unwrap();
    let reference = FlatTable::new(64, LAYOUT, init);
    // Block 4 (rows 32..40) shares one slot: rows 32..36 written, 36..40 not.
    let written: Vec<u64> = (32..36).collect();
    let data: Vec<f32> = (0..4 * 5).map(|i| i as f32 + 0.5).collect();
    store.write_rows(&written, &data).unwrap();
    let slot = key_slot(store.key(32).as_bytes());
    let masters = cluster.masters();
    let holds = |addr: &str| redis::cmd("GET").arg(store.key(32)).query::<redis::Value>(&mut connection(addr)).is_ok();
    let source = masters.iter().find(|a| holds(a)).unwrap().clone();
    let target = masters.iter().find(|a| **a != source).unwrap().clone();
    let id = |addr: &str| match on(addr, &["CLUSTER", "MYID"]) {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        other => panic!("{other:?}"),
    };
    let (source_id, target_id) = (id(&source), id(&target));
    let slot_text = slot.to_string();
    on(&target, &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &source_id]);
    on(&source, &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &target_id]);

    // Mid-migration: present keys are served by the source; a missing key answers ASK
    // and is read (still its initial value) or written at the target after ASKING.
    let mut out = vec![0f32; 4 * 5];
    store.read_rows(&written, &mut out).unwrap();
    assert_eq!(bits(&out), bits(&data));
    let mut one = vec![0f32; 5];
    store.read_rows(&[36], &mut one).unwrap();
    assert_eq!(bits(&one), bits(reference.row(36)));
    let new_row = [9.0f32, 8.0, 7.0, 6.0, 0.25];
    store.write_rows(&[37], &new_row).unwrap();
    let asked = store.stats().retries;
    assert!(asked >= 2, "the missing keys were asked elsewhere: {:?}", store.stats());

    // A read of several missing keys is refused while the slot migrates (Redis answers
    // multi-key commands there with ASK, then TRYAGAIN): the store keeps trying while the
    // migration finishes (keys moved, the slot given to the target), then follows MOVED.
    let finish = {
        let (source, target, masters, slot_text) = (source.clone(), target.clone(), masters.clone(), slot_text.clone());
        let keys: Vec<String> = (32..36).map(|r| store.key(r)).collect();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let (host, port) = target.rsplit_once(':').unwrap();
            let mut migrate = vec!["MIGRATE", host, port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            on(&source, &migrate);
            for addr in &masters {
                on(addr, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &target_id]);
            }
        })
    };
    let mut two = vec![0f32; 2 * 5];
    store.read_rows(&[38, 39], &mut two).unwrap();
    finish.join().unwrap();
    assert!(store.stats().retries > asked, "the read was tried again: {:?}", store.stats());
    let block: Vec<u64> = (32..40).collect();
    let mut out = vec![0f32; 8 * 5];
    store.read_rows(&block, &mut out).unwrap();
    let mut expected = data.clone();
    expected.extend_from_slice(reference.row(36));
    expected.extend_from_slice(&new_row);
    expected.extend(block[6..].iter().flat_map(|&r| reference.row(r).to_vec()));
    assert_eq!(bits(&out), bits(&expected));
    assert_eq!(bits(&two), bits(&expected[6 * 5..]));
    assert!(store.masters().contains(&target));
}
