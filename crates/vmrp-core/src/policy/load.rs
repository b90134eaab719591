//! Reading a policy: inline JSON from `VMRP_POLICY`, or a JSON / TOML file from
//! `VMRP_POLICY_FILE`. Parse errors name the field path (`rules[0].retention`) and what was
//! expected; unknown fields are errors (a typo such as `keeplast` must not silently fall back to
//! a default). After parsing, region display names are normalised (`"West US 2"` → `westus2`).

use std::path::Path;

use super::regions::normalize_region;
use super::{Policy, PolicyProblem};

/// The setting holding an inline policy (JSON, or TOML).
pub const ENV_POLICY: &str = "VMRP_POLICY";
/// The setting holding the path of a policy file (`.json` or `.toml`).
pub const ENV_POLICY_FILE: &str = "VMRP_POLICY_FILE";
/// The timer's schedule; rules without their own schedule run at each of its ticks.
pub const ENV_SCHEDULE: &str = "VMRP_SCHEDULE";

/// Why no usable policy could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("no policy: set {ENV_POLICY} (inline JSON) or {ENV_POLICY_FILE} (path of a .json or .toml file)")]
    Missing,
    #[error("both {ENV_POLICY} and {ENV_POLICY_FILE} are set; set only one")]
    Ambiguous,
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `origin` says where the text came from (`VMRP_POLICY`, `policy file x.toml`).
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{}", render_problems(.0))]
    Invalid(Vec<PolicyProblem>),
}

fn render_problems(problems: &[PolicyProblem]) -> String {
    let mut out = format!(
        "the policy has {} problem{}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.to_string());
    }
    out
}

/// The text formats a policy may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

impl Format {
    /// By file extension, else by content: JSON starts with `{`.
    fn detect(path: Option<&Path>, text: &str) -> Self {
        match path
            .and_then(|p| p.extension())
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => Self::Json,
            Some("toml") => Self::Toml,
            _ if text.trim_start().starts_with('{') => Self::Json,
            _ => Self::Toml,
        }
    }
}

impl Policy {
    pub fn from_json_str(text: &str) -> Result<Policy, PolicyError> {
        Self::parse(text, Format::Json, "policy JSON")
    }

    pub fn from_toml_str(text: &str) -> Result<Policy, PolicyError> {
        Self::parse(text, Format::Toml, "policy TOML")
    }

    /// Parses a `.json` or `.toml` file (other extensions: by content). Not validated.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let format = Format::detect(Some(path), &text);
        Self::parse(&text, format, &format!("policy file {}", path.display()))
    }

    /// The policy the app settings name, parsed and validated (with the timer schedule from
    /// `VMRP_SCHEDULE` when it is set). `env` is the settings lookup, e.g.
    /// `&|k| std::env::var(k).ok()`.
    pub fn load_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Policy, PolicyError> {
        let non_empty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let policy = match (non_empty(ENV_POLICY), non_empty(ENV_POLICY_FILE)) {
            (Some(_), Some(_)) => return Err(PolicyError::Ambiguous),
            (None, None) => return Err(PolicyError::Missing),
            (Some(inline), None) => {
                Self::parse(&inline, Format::detect(None, &inline), ENV_POLICY)?
            }
            (None, Some(path)) => Self::from_file(Path::new(path.trim()))?,
        };
        let checked = match non_empty(ENV_SCHEDULE) {
            Some(timer) => policy.validate_with_timer(&timer),
            None => policy.validate(),
        };
        checked.map_err(PolicyError::Invalid)?;
        Ok(policy)
    }

    fn parse(text: &str, format: Format, origin: &str) -> Result<Policy, PolicyError> {
        let parse_error = |message: String| PolicyError::Parse {
            origin: origin.to_string(),
            message,
        };
        let mut policy: Policy = match format {
            Format::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                serde_path_to_error::deserialize(&mut de)
                    .map_err(|e| parse_error(with_path(e.path(), e.inner())))?
            }
            Format::Toml => {
                let de = toml::Deserializer::parse(text).map_err(|e| parse_error(e.to_string()))?;
                serde_path_to_error::deserialize(de)
                    .map_err(|e| parse_error(with_path(e.path(), e.inner())))?
            }
        };
        policy.normalize();
        Ok(policy)
    }

    /// Canonical spellings: known regions as ARM `location` names. Unknown names stay as written
    /// so validation can report them as the user wrote them.
    pub fn normalize(&mut self) {
        for rule in &mut self.rules {
            for copy in &mut rule.copies {
                if let Some(canonical) = normalize_region(&copy.region) {
                    copy.region = canonical.to_string();
                }
            }
        }
    }
}

/// `rules[0].retention: unknown field `keeplast`, expected one of …`.
fn with_path(path: &serde_path_to_error::Path, inner: &dyn std::fmt::Display) -> String {
    let inner = inner.to_string();
    let inner = inner.trim_end();
    match path.to_string().as_str() {
        "." | "" => inner.to_string(),
        p => format!("{p}: {inner}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const MINIMAL: &str = r#"{"rules":[{"name":"all","targets":{},"retention":{"keepLast":5}}]}"#;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    fn parse_message(result: Result<Policy, PolicyError>) -> String {
        match result {
            Err(e @ PolicyError::Parse { .. }) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    /// The extension decides (in any case), the content only without a known one.
    #[test]
    fn format_is_detected_by_extension_then_by_content() {
        let cases = [
            (Some("policy.json"), "rules = []", Format::Json),
            (Some("policy.JSON"), "rules = []", Format::Json),
            (Some("policy.toml"), "{\"rules\":[]}", Format::Toml),
            (Some("policy.Toml"), "{\"rules\":[]}", Format::Toml),
            (Some("policy.txt"), "  \n{\"rules\":[]}", Format::Json),
            (Some("policy"), "rules = []", Format::Toml),
            (None, "{\"rules\":[]}", Format::Json),
            (None, "[[rules]]", Format::Toml),
        ];
        for (path, text, want) in cases {
            assert_eq!(
                Format::detect(path.map(Path::new), text),
                want,
                "{path:?} {text:?}"
            );
        }
    }

    #[test]
    fn minimal_json_gets_the_documented_defaults() {
        let p = Policy::from_json_str(MINIMAL).unwrap();
        let r = &p.rules[0];
        assert_eq!(
            r.consistency,
            crate::azure::models::ConsistencyMode::ApplicationConsistent
        );
        assert_eq!(r.retention.floor, 1);
        assert_eq!(r.deadlines.local_minutes, 120);
        assert_eq!(r.deadlines.copy_minutes, 14 * 24 * 60);
        assert_eq!(r.deadlines.max_retries, 2);
        assert!(r.schedule.is_none() && r.copies.is_empty());
        assert_eq!(p.orphans.expire_after_days, None);
    }

    #[test]
    fn json_typo_names_the_field_its_path_and_the_expected_names() {
        let msg = parse_message(Policy::from_json_str(
            r#"{"rules":[{"name":"a","targets":{},"retention":{"keeplast":5}}]}"#,
        ));
        assert!(msg.starts_with("policy JSON: rules[0].retention"), "{msg}");
        assert!(msg.contains("unknown field `keeplast`"), "{msg}");
        assert!(msg.contains("`keepLast`"), "{msg}");
    }

    #[test]
    fn toml_typo_names_the_field_and_its_path() {
        let msg = parse_message(Policy::from_toml_str(
            "[[rules]]\nname = \"a\"\ntargets = {}\n[rules.retention]\nkeepLast = 5\n\n[rules.deadlines]\nlocalMinute = 30\n",
        ));
        assert!(msg.contains("rules[0].deadlines"), "{msg}");
        assert!(msg.contains("unknown field `localMinute`"), "{msg}");
        assert!(msg.contains("`localMinutes`"), "{msg}");
    }

    #[test]
    fn wrong_types_and_missing_fields_are_named() {
        let msg = parse_message(Policy::from_json_str(
            r#"{"rules":[{"name":"a","targets":{},"retention":{"keepLast":"five"}}]}"#,
        ));
        assert!(msg.contains("rules[0].retention.keepLast"), "{msg}");
        assert!(msg.contains("expected u32"), "{msg}");

        let msg = parse_message(Policy::from_json_str(
            r#"{"rules":[{"name":"a","targets":{}}]}"#,
        ));
        assert!(
            msg.contains("rules[0]") && msg.contains("missing field `retention`"),
            "{msg}"
        );

        let msg = parse_message(Policy::from_json_str(
            r#"{"rules":[{"name":"a","targets":{"vms":["/subscriptions"]},"retention":{"keepLast":1}}]}"#,
        ));
        assert!(msg.contains("rules[0].targets.vms[0]"), "{msg}");
        assert!(msg.contains("invalid ARM resource id"), "{msg}");
    }

    #[test]
    fn malformed_text_reports_where() {
        let msg = parse_message(Policy::from_json_str(r#"{"rules": [}"#));
        assert!(msg.contains("line 1"), "{msg}");
        let msg = parse_message(Policy::from_toml_str("[[rules]\nname = 1"));
        assert!(msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn region_display_names_are_normalised_on_load() {
        let p = Policy::from_json_str(
            r#"{"rules":[{"name":"a","targets":{},"retention":{"keepLast":1},
                "copies":[{"region":"West US 2"},{"region":"Mars North"}]}]}"#,
        )
        .unwrap();
        assert_eq!(p.rules[0].copies[0].region, "westus2");
        assert_eq!(p.rules[0].copies[1].region, "Mars North");
    }

    #[test]
    fn env_inline_policy_loads_and_validates() {
        let p = Policy::load_from_env(&env_of(&[(ENV_POLICY, MINIMAL)])).unwrap();
        assert_eq!(p.rules[0].name, "all");
    }

    #[test]
    fn env_file_policy_loads_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            "[[rules]]\nname = \"t\"\ntargets = {}\nretention = { keepLast = 3 }\n",
        )
        .unwrap();
        let p =
            Policy::load_from_env(&env_of(&[(ENV_POLICY_FILE, path.to_str().unwrap())])).unwrap();
        assert_eq!(p.rules[0].name, "t");
        // A file without a known extension is sniffed: JSON starts with `{`.
        let path = dir.path().join("policy.conf");
        std::fs::write(&path, MINIMAL).unwrap();
        assert_eq!(Policy::from_file(&path).unwrap().rules[0].name, "all");
    }

    #[test]
    fn env_errors_are_clear() {
        let err = Policy::load_from_env(&env_of(&[])).unwrap_err();
        assert!(matches!(err, PolicyError::Missing));
        assert!(err.to_string().contains("VMRP_POLICY_FILE"));

        let err = Policy::load_from_env(&env_of(&[(ENV_POLICY, MINIMAL), (ENV_POLICY_FILE, "x")]))
            .unwrap_err();
        assert!(matches!(err, PolicyError::Ambiguous));

        let err = Policy::load_from_env(&env_of(&[(ENV_POLICY_FILE, "/nonexistent/p.json")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read policy file /nonexistent/p.json"),
            "{err}"
        );

        let err = Policy::load_from_env(&env_of(&[(ENV_POLICY, "{\"rules\": 5}")])).unwrap_err();
        assert!(err.to_string().starts_with("VMRP_POLICY: rules"), "{err}");
    }

    #[test]
    fn env_load_rejects_an_invalid_policy_with_every_problem() {
        let bad = r#"{"rules":[{"name":"","targets":{},"retention":{"keepLast":0}}]}"#;
        let err = Policy::load_from_env(&env_of(&[(ENV_POLICY, bad)])).unwrap_err();
        let PolicyError::Invalid(problems) = &err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert!(problems.len() >= 2, "{problems:?}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("the policy has {} problems:", problems.len())));
        assert!(text.contains("name: must not be empty"), "{text}");
    }

    #[test]
    fn env_load_checks_spacing_against_the_timer_schedule() {
        // Every hour is fine for the default timer (none set) but not app-consistent points.
        let env = env_of(&[(ENV_POLICY, MINIMAL), (ENV_SCHEDULE, "0 0 * * * *")]);
        let err = Policy::load_from_env(&env).unwrap_err();
        assert!(err.to_string().contains("every 3 h"), "{err}");
        let env = env_of(&[(ENV_POLICY, MINIMAL), (ENV_SCHEDULE, "0 0 */4 * * *")]);
        assert!(Policy::load_from_env(&env).is_ok());
    }
}
