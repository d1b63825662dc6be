//! Hardware profiles: the shipped ones load and combine into a whole machine, bad ones
//! give one-line errors naming the file and the field, and `strata calibrate` writes a
//! profile that loads.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata::plan::profile::{HardwareProfile, ProfileFile};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles").join(name)
}

const SHIPPED: [&str; 5] = ["h100-pcie5.toml", "ddr5-server.toml", "nvme-gen4.toml", "nvme-gen5.toml", "dev-vm-calibrated.toml"];

#[test]
fn every_shipped_profile_loads_and_they_combine_into_whole_machines() {
    for name in SHIPPED {
        let file = ProfileFile::load(&shipped(name)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!file.source.is_empty(), "{name} says where its figures come from");
    }
    for drive in ["nvme-gen4.toml", "nvme-gen5.toml"] {
        let paths = [shipped("h100-pcie5.toml"), shipped("ddr5-server.toml"), shipped(drive)];
        let machine = HardwareProfile::load(&paths).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(machine.sources, paths);
        assert_eq!(machine.device.capacity_gb, 80.0);
        assert_eq!(machine.host.capacity_gb, 1024.0);
        assert_eq!(machine.link.bandwidth_gbps, 50.0);
        assert!(machine.name.starts_with("NVIDIA H100") && machine.name.contains(" + DDR5-4800"), "{}", machine.name);
        // Memory tiers give no write figures: they default to the read figures.
        assert_eq!(machine.host.write_bandwidth_gbps(), machine.host.bandwidth_gbps);
        assert_eq!(machine.device.write_iops(), machine.device.iops);
        assert!(machine.storage.write_iops() < machine.storage.iops);
    }
    let measured = HardwareProfile::load(&[shipped("dev-vm-calibrated.toml")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(measured.device.name, "emulated-device");
    let gen5 = HardwareProfile::load(&[shipped("nvme-gen5.toml"), shipped("h100-pcie5.toml"), shipped("ddr5-server.toml")]).unwrap();
    assert_eq!((gen5.storage.iops, gen5.storage.bandwidth_gbps, gen5.storage.latency_us), (2.5e6, 14.0, 60.0));
}

const HOST: &str = "name = \"host\"\nsource = \"test\"\n\n[host]\nname = \"DDR\"\ncapacity_gb = 64\nprice_per_gb = 3.5\nbandwidth_gbps = 20\nlatency_us = 0.1\niops = 1e7\n";

/// Writes `files` (name, text) into a fresh folder and loads them together; the error.
fn load_error(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(name, text)| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let error = HardwareProfile::load(&paths).expect_err("a bad profile").to_string();
    assert_eq!(error.lines().count(), 1, "one line: {error}");
    error.replace(&format!("{}/", dir.path().display()), "")
}

/// The other three parts of a machine, from the shipped profiles.
fn with_the_rest<'a>(name: &'a str, text: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (name, text),
        ("h100-pcie5.toml", include_str!("../profiles/h100-pcie5.toml")),
        ("nvme-gen4.toml", include_str!("../profiles/nvme-gen4.toml")),
    ]
}

#[test]
fn a_figure_out_of_range_names_the_file_the_table_the_field_and_its_line() {
    let bad = HOST.replace("bandwidth_gbps = 20", "bandwidth_gbps = -3");
    assert_eq!(load_error(&with_the_rest("x.toml", &bad)), "x.toml: line 8: [host] bandwidth_gbps must be > 0, got -3");
    let bad = HOST.replace("iops = 1e7", "iops = 0");
    assert_eq!(load_error(&with_the_rest("x.toml", &bad)), "x.toml: line 10: [host] iops must be > 0, got 0");
    let bad = HOST.replace("iops = 1e7", "iops = 1e7\nwrite_iops = -1.5");
    assert_eq!(load_error(&with_the_rest("x.toml", &bad)), "x.toml: line 11: [host] write_iops must be > 0, got -1.5");
    let bad = include_str!("../profiles/h100-pcie5.toml").replace("latency_us = 10.0", "latency_us = inf");
    let error = load_error(&[("ddr5.toml", HOST), ("gpu.toml", &bad), ("nvme-gen4.toml", include_str!("../profiles/nvme-gen4.toml"))]);
    assert!(error.starts_with("gpu.toml: line ") && error.ends_with(": [link] latency_us must be > 0, got inf"), "{error}");
}

#[test]
fn a_missing_part_names_every_file_and_the_part() {
    let error = load_error(&[("a.toml", HOST), ("b.toml", include_str!("../profiles/h100-pcie5.toml"))]);
    assert_eq!(error, "a.toml, b.toml: no profile gives the [storage] tier");
    let no_link = include_str!("../profiles/h100-pcie5.toml");
    let no_link = &no_link[..no_link.find("[link]").unwrap()];
    let error = load_error(&[("a.toml", HOST), ("gpu.toml", no_link), ("nvme.toml", include_str!("../profiles/nvme-gen4.toml"))]);
    assert_eq!(error, "a.toml, gpu.toml, nvme.toml: no profile gives the [link] (host-to-device transfer)");
}

const ENGINE: &str = "name = \"cpu\"\nsource = \"test\"\n\n[engine]\nname = \"engine on a test CPU\"\nstore_row_ns = 850\n";

#[test]
fn the_engine_part_is_optional_checked_and_given_once() {
    // Without [engine] the model counts no CPU time per store row.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let rest = [write("host.toml", HOST), shipped("h100-pcie5.toml"), shipped("nvme-gen4.toml")];
    assert_eq!(HardwareProfile::load(&rest).unwrap().store_row_seconds(), 0.0);
    let mut with_engine = rest.to_vec();
    with_engine.push(write("cpu.toml", ENGINE));
    let machine = HardwareProfile::load(&with_engine).unwrap();
    assert_eq!(machine.engine.as_ref().map(|e| e.name.as_str()), Some("engine on a test CPU"));
    assert!((machine.store_row_seconds() - 850e-9).abs() < 1e-18);
    // Without a shared rate, read-ahead reads at the store's own; with one, at it.
    assert_eq!(machine.shared_store_iops(), machine.storage.iops);
    let mut shared = rest.to_vec();
    shared.push(write("shared.toml", &format!("{ENGINE}shared_store_iops = 40000\n")));
    assert_eq!(HardwareProfile::load(&shared).unwrap().shared_store_iops(), 40000.0);

    let mut files = with_the_rest("host.toml", HOST);
    let bad = ENGINE.replace("store_row_ns = 850", "store_row_ns = -2");
    files.push(("cpu.toml", &bad));
    assert_eq!(load_error(&files), "cpu.toml: line 6: [engine] store_row_ns must be >= 0, got -2");
    let mut files = with_the_rest("host.toml", HOST);
    let bad = format!("{ENGINE}shared_store_iops = 0\n");
    files.push(("cpu.toml", &bad));
    assert_eq!(load_error(&files), "cpu.toml: line 7: [engine] shared_store_iops must be > 0, got 0");
    let mut files = with_the_rest("host.toml", HOST);
    files.push(("a.toml", ENGINE));
    files.push(("b.toml", ENGINE));
    let error = load_error(&files);
    assert!(error.starts_with("b.toml: line 4: [engine] is given here and by ") && error.contains("a.toml too"), "{error}");
}

#[test]
fn a_part_given_twice_names_both_files() {
    let mut files = with_the_rest("a.toml", HOST);
    files.push(("b.toml", HOST));
    let error = load_error(&files);
    assert!(error.starts_with("b.toml: line 4: [host] is given here and by "), "{error}");
    assert!(error.contains("a.toml too"), "{error}");
}

#[test]
fn unknown_fields_and_wrong_types_name_the_file_the_line_and_the_field() {
    let bad = HOST.replace("iops = 1e7", "iops = 1e7\nbandwith_gbps = 3");
    let error = load_error(&with_the_rest("x.toml", &bad));
    assert!(error.starts_with("x.toml: line 11, column 1: "), "{error}");
    assert!(error.contains("unknown field `bandwith_gbps`"), "{error}");
    let bad = HOST.replace("latency_us = 0.1", "latency_us = \"fast\"");
    let error = load_error(&with_the_rest("x.toml", &bad));
    assert!(error.starts_with("x.toml: line 9, column 14: "), "{error}");
    assert!(error.contains("invalid type: string \"fast\", expected f64"), "{error}");
    let bad = HOST.replace("capacity_gb = 64\n", "");
    let error = load_error(&with_the_rest("x.toml", &bad));
    assert!(error.starts_with("x.toml: line ") && error.contains("missing field `capacity_gb`"), "{error}");
    let error = load_error(&with_the_rest("x.toml", "name = \"x\"\nsource = \"y\"\n"));
    assert_eq!(error, "x.toml: gives none of [device], [host], [storage], [link] and [engine]");
}

#[test]
fn calibrate_writes_a_profile_that_loads_with_every_figure_positive() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("profiles/here.toml");
    let scratch = dir.path().join("scratch");
    let run = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["calibrate", "--quick", "--dim", "16", "--device", "emulated", "--out"])
        .arg(&out)
        .arg("--dir")
        .arg(&scratch)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "calibrate failed: {}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("| storage |") && stdout.contains("| link |"), "{stdout}");
    assert!(!scratch.exists(), "the scratch folder it created is removed");
    let machine = HardwareProfile::load(std::slice::from_ref(&out)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(machine.sources, vec![out]);
    assert_eq!(machine.device.name, "emulated-device");
    for tier in [&machine.device, &machine.host, &machine.storage] {
        let figures = [tier.capacity_gb, tier.bandwidth_gbps, tier.latency_us, tier.iops, tier.write_bandwidth_gbps(), tier.write_iops()];
        assert!(figures.iter().all(|&f| f > 0.0 && f.is_finite()), "{}: {figures:?}", tier.name);
    }
    assert!(machine.link.bandwidth_gbps > 0.0 && machine.link.latency_us > 0.0);
    let engine = machine.engine.as_ref().expect("calibrate measures the engine's CPU cost");
    assert!(engine.store_row_ns >= 0.0 && engine.store_row_ns.is_finite(), "{engine:?}");
    assert!(stdout.contains("ns of CPU per row read from the store"), "{stdout}");
    let shared = engine.shared_store_iops.expect("calibrate measures the store's rate under read-ahead");
    assert!(shared > 0.0 && shared.is_finite(), "{engine:?}");
    assert!(stdout.contains("rows/s under read-ahead"), "{stdout}");
    // The prices are the shipped nominal ones, as `source` says.
    let ddr5 = ProfileFile::load(&shipped("ddr5-server.toml")).unwrap().host.unwrap();
    let nvme = ProfileFile::load(&shipped("nvme-gen4.toml")).unwrap().storage.unwrap();
    assert_eq!((machine.host.price_per_gb, machine.storage.price_per_gb), (ddr5.price_per_gb, nvme.price_per_gb));
    let file = ProfileFile::load(&machine.sources[0]).unwrap();
    assert!(file.source.contains("profiles/ddr5-server.toml") && file.source.contains("emulated device"), "{}", file.source);
}
