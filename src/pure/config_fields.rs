//! A config's JSON checked field by field before it is read whole, so that
//! `check-config` names every unknown field and every value of the wrong
//! kind in one run, each by its path (`servers[2].neighbors`), with the
//! closest valid name when there is one ("did you mean `neighbours`?").
//!
//! serde stops at the first problem; this walks the sections itself. The
//! names each section takes are serde's own (read from its refusal of an
//! unknown field), so they cannot drift from the types. Pure: values in,
//! messages out.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::pure::clients::{ClientTlsConfig, ClientsConfig};
use crate::pure::config::{
    Config, Limits, LoggingConfig, PersistenceConfig, PlacesConfig, ServerConfig, TlsConfig,
};

/// Every unknown field and wrongly typed value of a config's JSON.
pub(crate) fn problems(value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(top) = value.as_object() else {
        problems.push("the config is not a JSON object ({\"servers\": [...], ...})".to_owned());
        return problems;
    };
    let sections: [(&str, Checker); 8] = [
        ("limits", check::<Limits>),
        ("places", check::<PlacesConfig>),
        ("tls", check::<TlsConfig>),
        ("logging", check::<LoggingConfig>),
        ("persistence", check::<PersistenceConfig>),
        ("clients", check::<ClientsConfig>),
        ("client_tls", check::<ClientTlsConfig>),
        ("servers", check_servers),
    ];
    let known = fields_of::<Config>();
    for (key, field) in top {
        if !known.iter().any(|k| k == key) {
            problems.push(unknown(key, key, &known));
            continue;
        }
        match sections.iter().find(|(name, _)| name == key) {
            Some((_, checker)) if !field.is_null() || *key == "servers" => {
                checker(key, field, &mut problems);
            }
            _ => field_problem::<Config>(key, key, field, &mut problems),
        }
    }
    problems
}

/// Checks one section at `path`.
type Checker = fn(&str, &Value, &mut Vec<String>);

/// Checks a section of type `T`: an object whose fields `T` knows, each of
/// a kind `T` takes, and none it needs missing.
fn check<T: DeserializeOwned>(path: &str, value: &Value, problems: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        problems.push(format!(
            "{path}: is {}, not an object ({{...}})",
            kind_of(value)
        ));
        return;
    };
    let known = fields_of::<T>();
    let mut good = Map::new();
    for (key, field) in object {
        if known.iter().any(|k| k == key) {
            good.insert(key.clone(), field.clone());
        } else {
            problems.push(unknown(&format!("{path}.{key}"), key, &known));
        }
    }
    let before = problems.len();
    for (key, field) in &good {
        field_problem::<T>(&format!("{path}.{key}"), key, field, problems);
    }
    // Fields it needs and lacks, once all present ones are of their kind.
    if problems.len() == before {
        if let Err(e) = serde_json::from_value::<T>(Value::Object(good)) {
            problems.push(format!("{path}: {}", plain(&e.to_string())));
        }
    }
}

/// Checks `servers`: a list of server objects.
fn check_servers(path: &str, value: &Value, problems: &mut Vec<String>) {
    let Some(servers) = value.as_array() else {
        problems.push(format!(
            "{path}: is {}, not a list of servers ([{{\"name\": ..., \"listen\": ...}}, ...])",
            kind_of(value)
        ));
        return;
    };
    for (i, server) in servers.iter().enumerate() {
        check::<ServerConfig>(&format!("{path}[{i}]"), server, problems);
    }
}

/// Reports `field` at `path` when `T` refuses it, read alone: serde
/// reads a map's fields in order and says what it misses only at the end,
/// so an error that is not "missing field" is this field's.
fn field_problem<T: DeserializeOwned>(
    path: &str,
    key: &str,
    field: &Value,
    problems: &mut Vec<String>,
) {
    let alone = serde_json::json!({ key: field });
    let Err(e) = serde_json::from_value::<T>(alone) else {
        return;
    };
    let text = e.to_string();
    if !text.starts_with("missing field") {
        problems.push(format!("{path}: {}", suggest(&plain(&text))));
    }
}

/// The message for an unknown field `key` at `path`.
fn unknown(path: &str, key: &str, known: &[String]) -> String {
    match closest(key, known) {
        Some(near) => format!("{path}: unknown field; did you mean `{near}`?"),
        None => format!(
            "{path}: unknown field; the fields here are {}",
            known.join(", ")
        ),
    }
}

/// serde's message without the position (`at line 1 column 9`), which
/// refers to a value's own text, not the file.
fn plain(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// serde's "unknown variant `x`, expected one of `a`, `b`" with the closest
/// of them named.
fn suggest(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown variant `") else {
        return message.to_owned();
    };
    let Some((given, _)) = rest.split_once('`') else {
        return message.to_owned();
    };
    match closest(
        given,
        &backticked(message).into_iter().skip(1).collect::<Vec<_>>(),
    ) {
        Some(near) => format!("{message}; did you mean `{near}`?"),
        None => message.to_owned(),
    }
}

/// The field names `T` takes, read from serde's refusal of a field no
/// config has (every section denies unknown fields).
fn fields_of<T: DeserializeOwned>() -> Vec<String> {
    let probe = serde_json::json!({ "\u{1}not a field": 0 });
    match serde_json::from_value::<T>(probe) {
        Err(e) => backticked(&e.to_string()).into_iter().skip(1).collect(),
        Ok(_) => Vec::new(),
    }
}

/// The `quoted` words of a message, in order.
fn backticked(message: &str) -> Vec<String> {
    message
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The known name nearest `given`, if it is near enough to be a typo.
fn closest(given: &str, known: &[String]) -> Option<String> {
    let bound = (given.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (distance(given, k), k))
        .filter(|(d, _)| *d <= bound)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

/// Levenshtein distance, by chars, compared without case.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(up + 1);
            diagonal = up;
        }
    }
    row[b.len()]
}

/// How a JSON value is called in messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(value: Value) -> Vec<String> {
        problems(&value)
    }

    #[test]
    fn every_unknown_field_is_named_by_its_path_with_the_closest_name() {
        let config = json!({
            "secert": "s",
            "servers": [
                {"name": "A", "listen": "127.0.0.1:1", "neighbours": []},
                {"name": "B", "listen": "127.0.0.1:2", "neighbors": ["A"], "colour": "red"}
            ],
            "limits": {"max_line_byte": 10, "channel_capacity": 4},
            "places": {"provdier": "mock"}
        });
        let said = found(config);
        for expected in [
            "limits.max_line_byte: unknown field; did you mean `max_line_bytes`?",
            "places.provdier: unknown field; did you mean `provider`?",
            "secert: unknown field; did you mean `secret`?",
            "servers[1].neighbors: unknown field; did you mean `neighbours`?",
        ] {
            assert!(
                said.iter().any(|p| p == expected),
                "no {expected:?} in {said:#?}"
            );
        }
        let colour = said
            .iter()
            .find(|p| p.starts_with("servers[1].colour"))
            .unwrap();
        assert!(
            colour.contains("the fields here are name, listen"),
            "{colour}"
        );
        assert_eq!(said.len(), 5, "{said:#?}");
    }

    #[test]
    fn every_value_of_the_wrong_kind_is_named_by_its_path() {
        let config = json!({
            "servers": [{"name": "A", "listen": 80}, {"name": 5, "listen": "127.0.0.1:2"}],
            "limits": {"max_records": "ten", "link_timeout_ms": -1},
            "places": {"provider": "googel"},
            "insecure_links": "yes"
        });
        let said = found(config);
        let has = |path: &str, words: &str| {
            assert!(
                said.iter()
                    .any(|p| p.starts_with(path) && p.contains(words)),
                "no {path} with {words:?} in {said:#?}"
            )
        };
        has(
            "servers[0].listen: invalid type: integer `80`",
            "expected a string",
        );
        has(
            "servers[1].name: invalid type: integer `5`",
            "expected a string",
        );
        has(
            "limits.max_records: invalid type: string \"ten\"",
            "expected",
        );
        has("limits.link_timeout_ms: invalid value: integer `-1`", "u64");
        has(
            "places.provider: unknown variant `googel`",
            "did you mean `google`?",
        );
        has("insecure_links: invalid type: string \"yes\"", "boolean");
        assert_eq!(said.len(), 6, "{said:#?}");
        assert!(!said.iter().any(|p| p.contains(" at line ")), "{said:#?}");
    }

    #[test]
    fn missing_required_fields_and_sections_of_the_wrong_shape_are_named_once() {
        let said = found(json!({
            "servers": [{"listen": "127.0.0.1:1"}],
            "tls": {"ca": "ca.pem"},
            "limits": [1]
        }));
        assert_eq!(
            said,
            [
                "limits: is a list, not an object ({...})",
                "servers[0]: missing field `name`",
                "tls: missing field `cert`",
            ],
            "{said:#?}"
        );
        assert_eq!(
            found(json!({"servers": {"name": "A"}})),
            ["servers: is an object, not a list of servers ([{\"name\": ..., \"listen\": ...}, ...])"]
        );
        assert_eq!(found(json!([1])).len(), 1);
    }

    #[test]
    fn a_good_config_has_no_problems_here() {
        let text = Config::default_herd().to_json_pretty();
        assert_eq!(
            found(serde_json::from_str(&text).unwrap()),
            Vec::<String>::new()
        );
        assert!(found(json!({"tls": null, "persistence": null, "servers": []})).is_empty());
    }

    #[test]
    fn names_near_enough_are_suggested_and_others_are_not() {
        let known: Vec<String> = ["neighbours", "listen", "name"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("neighbors", &known).as_deref(), Some("neighbours"));
        assert_eq!(closest("Listen", &known).as_deref(), Some("listen"));
        assert_eq!(closest("colour", &known), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
