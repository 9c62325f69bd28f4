//! The configuration's own tests: filters, redaction, the example file.

use super::*;

#[test]
fn filters_apply_include_then_exclude() {
    let mut config: Config = toml::from_str("").unwrap();
    assert!(config.is_replicated("any/key"));
    config.replicate.include_prefixes = vec!["logs/".into()];
    config.replicate.exclude_prefixes = vec!["logs/tmp/".into()];
    assert!(config.is_replicated("logs/a"));
    assert!(!config.is_replicated("logs/tmp/a"));
    assert!(!config.is_replicated("data/a"));
}

#[test]
fn secrets_are_redacted_in_debug_and_toml() {
    let mut config: Config = toml::from_str("").unwrap();
    config.target.credentials = Some(CredentialsConfig {
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some(Secret::new("very-secret-value")),
        ..Default::default()
    });
    assert!(!format!("{config:?}").contains("very-secret-value"));
    let printed = config.to_redacted_toml();
    assert!(!printed.contains("very-secret-value"));
    assert!(printed.contains("<redacted>"));
}

/// Every key of the example file is documented with the default the code uses.
#[test]
fn the_example_file_documents_every_key_with_its_default() {
    let example = include_str!("../../config/xpsync.example.toml");
    let defaults: Config = toml::from_str("").unwrap();
    let defaults: toml::Table = toml::from_str(&defaults.to_redacted_toml()).unwrap();

    // The example's commented-out `key = value` lines, table by table.
    let mut documented = toml::Table::new();
    let mut table = String::new();
    for line in example.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.to_owned();
            continue;
        }
        let Some((key, rest)) = line.split_once(" = ") else {
            continue;
        };
        let value = rest.split("  #").next().unwrap().trim();
        let Ok(value) = toml::from_str::<toml::Table>(&format!("v = {value}")) else {
            continue;
        };
        documented
            .entry(table.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap()
            .insert(key.trim().to_owned(), value["v"].clone());
    }

    for (name, keys) in &defaults {
        let keys = keys.as_table().unwrap();
        let doc = documented[name.as_str()].as_table().unwrap();
        for (key, default) in keys {
            let shown = doc
                .get(key)
                .unwrap_or_else(|| panic!("{name}.{key} is not in the example"));
            if name == "source" || name == "target" && (key == "region" || key == "bucket") {
                continue; // required: the example shows a value, not a default
            }
            // Parse what the example shows with the real types, then compare.
            let mut one = toml::Table::new();
            one.insert(key.clone(), shown.clone());
            let mut wrapped = toml::Table::new();
            wrapped.insert(name.clone(), toml::Value::Table(one));
            let parsed: Config = toml::from_str(&wrapped.to_string())
                .unwrap_or_else(|e| panic!("{name}.{key}: {e}"));
            let parsed: toml::Table = toml::from_str(&parsed.to_redacted_toml()).unwrap();
            assert_eq!(
                &parsed[name.as_str()][key.as_str()],
                default,
                "{name}.{key}"
            );
        }
    }
}
