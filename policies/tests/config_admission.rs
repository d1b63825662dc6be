//! Configuration parsing/serde and admission filter tests.

use strata_policies::*;

#[test]
fn from_name_accepts_every_cli_name() {
    for name in PolicyConfig::NAMES {
        let cfg = PolicyConfig::from_name(name).unwrap();
        assert_eq!(cfg.name(), *name);
        let p = cfg.build(100).unwrap();
        assert_eq!(p.name(), *name);
        assert_eq!(p.capacity(), 100);
        assert!(p.is_empty());
    }
}

#[test]
fn from_name_parameters() {
    assert_eq!(PolicyConfig::from_name("lookahead:4096").unwrap(), PolicyConfig::LookaheadBelady { window: 4096 });
    assert_eq!(PolicyConfig::from_name("static:100000").unwrap(), PolicyConfig::Static { profile_requests: 100_000 });
    assert_eq!(PolicyConfig::from_name("clock:2").unwrap(), PolicyConfig::Clock { bits: 2 });
    assert_eq!(PolicyConfig::from_name("lfu:0").unwrap(), PolicyConfig::Lfu { aging_period: Some(0) });
    assert_eq!(PolicyConfig::from_name("LRU").unwrap(), PolicyConfig::Lru);
    assert_eq!(
        PolicyConfig::from_name("s3fifo:0.2").unwrap(),
        PolicyConfig::S3Fifo { small_ratio: 0.2, ghost_ratio: 0.9, move_to_main_threshold: 2 }
    );
    assert_eq!(PolicyConfig::from_name("tinylfu").unwrap(), PolicyConfig::WTinyLfu { window_ratio: 0.01, protected_ratio: 0.8 });
}

#[test]
fn from_name_errors() {
    let e = PolicyConfig::from_name("lruu").unwrap_err();
    assert!(matches!(e, PolicyConfigError::UnknownName { .. }));
    let msg = e.to_string();
    for name in PolicyConfig::NAMES {
        assert!(msg.contains(name), "{msg}");
    }
    assert!(PolicyConfig::from_name("lru:3").is_err());
    assert!(PolicyConfig::from_name("lookahead:abc").is_err());
    assert!(PolicyConfig::from_name("lookahead:-1").is_err());
    assert!(PolicyConfig::from_name("clock:0").is_err());
    assert!(PolicyConfig::from_name("clock:9").is_err());
    assert!(PolicyConfig::from_name("s3fifo:1.5").is_err());
    assert!(PolicyConfig::from_name("tinylfu:NaN").is_err());
    let e: Box<dyn std::error::Error> = Box::new(PolicyConfig::from_name("x").unwrap_err());
    assert!(!e.to_string().is_empty());
}

#[test]
fn labels() {
    let l = |s: &str| PolicyConfig::from_name(s).unwrap().label();
    assert_eq!(l("lookahead:4096"), "lookahead(4096)");
    assert_eq!(l("static:500"), "static(500)");
    assert_eq!(l("lru"), "lru");
    assert_eq!(l("clock"), "clock");
    assert_eq!(l("clock:2"), "clock(2)");
    assert_eq!(l("lfu"), "lfu");
    assert_eq!(l("lfu:0"), "lfu(no-aging)");
    assert_eq!(l("s3fifo"), "s3fifo");
    assert_eq!(l("tinylfu"), "tinylfu");
}

#[test]
fn needs_future() {
    assert!(PolicyConfig::Belady.needs_future());
    assert!(PolicyConfig::from_name("lookahead").unwrap().needs_future());
    for n in ["lru", "fifo", "clock", "lfu", "arc", "s3fifo", "sieve", "tinylfu", "static"] {
        assert!(!PolicyConfig::from_name(n).unwrap().needs_future(), "{n}");
    }
}

#[test]
fn build_rejects_zero_capacity_and_bad_parameters() {
    for name in PolicyConfig::NAMES {
        let e = PolicyConfig::from_name(name).unwrap().build(0).err().unwrap();
        assert_eq!(e, PolicyConfigError::ZeroCapacity);
    }
    assert!(PolicyConfig::Clock { bits: 0 }.build(10).is_err());
    assert!(PolicyConfig::S3Fifo { small_ratio: -0.1, ghost_ratio: 0.9, move_to_main_threshold: 2 }.build(10).is_err());
    assert!(PolicyConfig::S3Fifo { small_ratio: 0.1, ghost_ratio: f64::INFINITY, move_to_main_threshold: 2 }.build(10).is_err());
    assert!(PolicyConfig::WTinyLfu { window_ratio: 1.0, protected_ratio: 0.8 }.build(10).is_err());
    assert!(PolicyConfig::WTinyLfu { window_ratio: 0.01, protected_ratio: 1.5 }.build(10).is_err());
}

#[test]
fn serde_toml_round_trip() {
    let all = vec![
        PolicyConfig::Lru,
        PolicyConfig::Fifo,
        PolicyConfig::Clock { bits: 3 },
        PolicyConfig::Lfu { aging_period: Some(1000) },
        PolicyConfig::Lfu { aging_period: None },
        PolicyConfig::Arc,
        PolicyConfig::S3Fifo { small_ratio: 0.2, ghost_ratio: 0.5, move_to_main_threshold: 1 },
        PolicyConfig::Sieve,
        PolicyConfig::WTinyLfu { window_ratio: 0.05, protected_ratio: 0.7 },
        PolicyConfig::Belady,
        PolicyConfig::LookaheadBelady { window: 77 },
        PolicyConfig::Static { profile_requests: 12 },
    ];
    for cfg in all {
        let text = toml::to_string(&cfg).unwrap();
        let back: PolicyConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg, "{text}");
    }
}

#[test]
fn serde_defaults_and_aliases() {
    let c: PolicyConfig = toml::from_str("kind = \"lookahead_belady\"").unwrap();
    assert_eq!(c, PolicyConfig::LookaheadBelady { window: 4096 });
    let c: PolicyConfig = toml::from_str("kind = \"lookahead\"\nwindow = 8").unwrap();
    assert_eq!(c, PolicyConfig::LookaheadBelady { window: 8 });
    let c: PolicyConfig = toml::from_str("kind = \"s3fifo\"").unwrap();
    assert_eq!(c, PolicyConfig::S3Fifo { small_ratio: 0.1, ghost_ratio: 0.9, move_to_main_threshold: 2 });
    let c: PolicyConfig = toml::from_str("kind = \"tinylfu\"").unwrap();
    assert_eq!(c, PolicyConfig::WTinyLfu { window_ratio: 0.01, protected_ratio: 0.8 });
    let c: PolicyConfig = toml::from_str("kind = \"clock\"").unwrap();
    assert_eq!(c, PolicyConfig::Clock { bits: 1 });
    let c: PolicyConfig = toml::from_str("kind = \"static\"").unwrap();
    assert_eq!(c, PolicyConfig::Static { profile_requests: 100_000 });
}

#[test]
fn serde_rejects_unknown_fields_and_kinds() {
    assert!(toml::from_str::<PolicyConfig>("kind = \"lookahead\"\nwindw = 8").is_err());
    assert!(toml::from_str::<PolicyConfig>("kind = \"clock\"\nbits = 2\nextra = 1").is_err());
    assert!(toml::from_str::<PolicyConfig>("kind = \"nope\"").is_err());
    assert!(toml::from_str::<AdmissionConfig>("kind = \"frequency\"\nthreshold = 2\nfoo = 1").is_err());
}

#[test]
fn admission_always() {
    let mut a = Admission::new(&AdmissionConfig::Always).unwrap();
    assert!(a.admits_everything());
    assert!(a.observe(1, false));
    assert!(AdmissionConfig::from_name("always").unwrap() == AdmissionConfig::Always);
}

#[test]
fn admission_frequency_threshold() {
    let cfg = AdmissionConfig::Frequency { threshold: 3, counters: 4096, reset_interval: 0 };
    let mut a = cfg.build().unwrap();
    assert!(!a.admits_everything());
    assert!(!a.observe(7, false));
    assert!(!a.observe(7, false));
    assert!(a.observe(7, false));
    // Residents are always served.
    assert!(a.observe(8, true));
    assert!(!a.observe(9, false));
    assert_eq!(AdmissionConfig::from_name("freq:3").unwrap().label(), "frequency(3)");
}

#[test]
fn admission_frequency_resets() {
    // Halving every 2 requests: a row seen every other request never counts past 1.
    let cfg = AdmissionConfig::Frequency { threshold: 2, counters: 4096, reset_interval: 2 };
    let mut a = cfg.build().unwrap();
    let admitted = (0..40).filter(|i| a.observe(if i % 2 == 0 { 1 } else { 1000 + i }, false)).count();
    assert_eq!(admitted, 0);
}

#[test]
fn admission_probabilistic() {
    let mut a = AdmissionConfig::Probabilistic { probability: 0.25, seed: 42 }.build().unwrap();
    let n = (0..20_000).filter(|&i| a.observe(i, false)).count();
    assert!((4_500..5_500).contains(&n), "{n}");
    assert!(a.observe(1, true));
    let mut never = AdmissionConfig::Probabilistic { probability: 0.0, seed: 1 }.build().unwrap();
    assert!((0..1000).all(|i| !never.observe(i, false)));
    let mut always = AdmissionConfig::Probabilistic { probability: 1.0, seed: 1 }.build().unwrap();
    assert!((0..1000).all(|i| always.observe(i, false)));
    // Same seed, same decisions.
    let mut x = AdmissionConfig::Probabilistic { probability: 0.5, seed: 9 }.build().unwrap();
    let mut y = AdmissionConfig::Probabilistic { probability: 0.5, seed: 9 }.build().unwrap();
    assert!((0..1000).all(|i| x.observe(i, false) == y.observe(i, false)));
    assert!(AdmissionConfig::Probabilistic { probability: 1.5, seed: 0 }.build().is_err());
    assert!(AdmissionConfig::from_name("prob:2").is_err());
    assert!(AdmissionConfig::from_name("sometimes").is_err());
}

#[test]
fn admission_serde_round_trip() {
    for cfg in [
        AdmissionConfig::Always,
        AdmissionConfig::Frequency { threshold: 2, counters: 100, reset_interval: 5 },
        AdmissionConfig::Probabilistic { probability: 0.3, seed: 7 },
    ] {
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(toml::from_str::<AdmissionConfig>(&text).unwrap(), cfg);
    }
    let c: AdmissionConfig = toml::from_str("kind = \"frequency\"").unwrap();
    assert!(matches!(c, AdmissionConfig::Frequency { threshold: 2, .. }));
}
